//! A subscription matcher: a trie over subject tokens with `*` and `>` branches.
//!
//! Matching a subject walks one branch per token, plus the `*` branch and the `>` leaf at each level,
//! so its cost depends on the subject's depth and on the wildcards in use, not on how many
//! subscriptions there are. It allocates nothing while matching.

use std::collections::HashMap;

/// Values of type `T` filed under subject patterns.
pub struct Sublist<T> {
    root: Level<T>,
    len: usize,
}

struct Level<T> {
    literal: HashMap<Box<str>, Node<T>>,
    star: Option<Box<Node<T>>>,
    full: Option<Box<Node<T>>>,
}

struct Node<T> {
    values: Vec<T>,
    next: Option<Box<Level<T>>>,
}

impl<T> Default for Level<T> {
    fn default() -> Self {
        Level {
            literal: HashMap::new(),
            star: None,
            full: None,
        }
    }
}

impl<T> Default for Node<T> {
    fn default() -> Self {
        Node {
            values: Vec::new(),
            next: None,
        }
    }
}

impl<T> Level<T> {
    fn is_empty(&self) -> bool {
        self.literal.is_empty() && self.star.is_none() && self.full.is_none()
    }

    fn node_mut(&mut self, token: &str) -> &mut Node<T> {
        match token {
            "*" => self.star.get_or_insert_with(Box::default),
            ">" => self.full.get_or_insert_with(Box::default),
            _ => self.literal.entry(token.into()).or_default(),
        }
    }
}

impl<T> Node<T> {
    fn is_empty(&self) -> bool {
        self.values.is_empty() && self.next.is_none()
    }
}

impl<T> Default for Sublist<T> {
    fn default() -> Self {
        Sublist {
            root: Level::default(),
            len: 0,
        }
    }
}

impl<T> Sublist<T> {
    /// An empty matcher.
    pub fn new() -> Sublist<T> {
        Sublist::default()
    }

    /// How many values are filed.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no values are filed.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Files `value` under `pattern`. The pattern must be valid
    /// ([`crate::subject::validate_pattern`]); the same value may be filed more than once.
    pub fn insert(&mut self, pattern: &str, value: T) {
        let mut tokens = pattern.split('.');
        let first = tokens.next().unwrap_or("");
        let mut node = self.root.node_mut(first);
        for token in tokens {
            node = node.next.get_or_insert_with(Box::default).node_mut(token);
        }
        node.values.push(value);
        self.len += 1;
    }

    /// Calls `f` with each value whose pattern matches the literal `subject`. A value filed under
    /// several matching patterns is seen once per pattern.
    pub fn for_each_match(&self, subject: &str, mut f: impl FnMut(&T)) {
        visit(&self.root, subject, &mut f);
    }
}

impl<T: PartialEq> Sublist<T> {
    /// Removes one value equal to `value` filed under `pattern`; false if there was none.
    pub fn remove(&mut self, pattern: &str, value: &T) -> bool {
        let removed = remove_in(&mut self.root, pattern, value);
        if removed {
            self.len -= 1;
        }
        removed
    }
}

fn visit<T>(level: &Level<T>, subject: &str, f: &mut impl FnMut(&T)) {
    let (token, rest) = match subject.split_once('.') {
        Some((token, rest)) => (token, Some(rest)),
        None => (subject, None),
    };
    if let Some(full) = &level.full {
        full.values.iter().for_each(&mut *f);
    }
    if let Some(star) = &level.star {
        descend(star, rest, f);
    }
    if let Some(node) = level.literal.get(token) {
        descend(node, rest, f);
    }
}

fn descend<T>(node: &Node<T>, rest: Option<&str>, f: &mut impl FnMut(&T)) {
    match rest {
        None => node.values.iter().for_each(f),
        Some(rest) => {
            if let Some(next) = &node.next {
                visit(next, rest, f);
            }
        }
    }
}

/// Removes one value under `pattern` below `level`, pruning nodes left empty.
fn remove_in<T: PartialEq>(level: &mut Level<T>, pattern: &str, value: &T) -> bool {
    let (token, rest) = match pattern.split_once('.') {
        Some((token, rest)) => (token, Some(rest)),
        None => (pattern, None),
    };
    let node: &mut Node<T> = match token {
        "*" => match level.star.as_deref_mut() {
            Some(node) => node,
            None => return false,
        },
        ">" => match level.full.as_deref_mut() {
            Some(node) => node,
            None => return false,
        },
        _ => match level.literal.get_mut(token) {
            Some(node) => node,
            None => return false,
        },
    };
    let removed = match rest {
        None => match node.values.iter().position(|v| v == value) {
            Some(index) => {
                node.values.swap_remove(index);
                true
            }
            None => false,
        },
        Some(rest) => match node.next.as_deref_mut() {
            Some(next) => {
                let removed = remove_in(next, rest, value);
                if next.is_empty() {
                    node.next = None;
                }
                removed
            }
            None => false,
        },
    };
    if removed && node.is_empty() {
        match token {
            "*" => level.star = None,
            ">" => level.full = None,
            _ => {
                level.literal.remove(token);
            }
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::subject::matches;
    use proptest::prelude::*;

    fn matched(list: &Sublist<u32>, subject: &str) -> Vec<u32> {
        let mut out = Vec::new();
        list.for_each_match(subject, |v| out.push(*v));
        out.sort_unstable();
        out
    }

    #[test]
    fn wildcards_match_as_documented() {
        let mut list = Sublist::new();
        list.insert("a.b.c", 1);
        list.insert("a.*.c", 2);
        list.insert("a.>", 3);
        list.insert(">", 4);
        list.insert("*.b.*", 5);
        assert_eq!(matched(&list, "a.b.c"), vec![1, 2, 3, 4, 5]);
        assert_eq!(matched(&list, "a.x.c"), vec![2, 3, 4]);
        assert_eq!(matched(&list, "a"), vec![4]);
        assert_eq!(matched(&list, "a.b"), vec![3, 4]);
        assert_eq!(matched(&list, "z.b.q"), vec![4, 5]);
    }

    #[test]
    fn removal_prunes_and_leaves_the_rest() {
        let mut list = Sublist::new();
        list.insert("a.b.c", 1);
        list.insert("a.b.c", 2);
        list.insert("a.>", 3);
        assert!(list.remove("a.b.c", &1));
        assert!(!list.remove("a.b.c", &1));
        assert!(!list.remove("a.b", &2));
        assert_eq!(matched(&list, "a.b.c"), vec![2, 3]);
        assert!(list.remove("a.b.c", &2));
        assert!(list.remove("a.>", &3));
        assert!(list.is_empty());
        assert!(list.root.is_empty());
    }

    fn token() -> impl Strategy<Value = String> {
        prop_oneof![Just("a"), Just("b"), Just("c"), Just("dd")].prop_map(String::from)
    }

    fn subject() -> impl Strategy<Value = String> {
        proptest::collection::vec(token(), 1..5).prop_map(|t| t.join("."))
    }

    fn pattern() -> impl Strategy<Value = String> {
        (
            proptest::collection::vec(prop_oneof![3 => token(), 1 => Just("*".to_string())], 1..5),
            any::<bool>(),
        )
            .prop_map(|(mut tokens, full)| {
                if full {
                    let last = tokens.len() - 1;
                    tokens[last] = ">".to_string();
                }
                tokens.join(".")
            })
    }

    proptest! {
        #[test]
        fn the_trie_agrees_with_the_reference_matcher(
            patterns in proptest::collection::vec(pattern(), 0..40),
            removals in proptest::collection::vec(any::<prop::sample::Index>(), 0..10),
            subjects in proptest::collection::vec(subject(), 1..20),
        ) {
            let mut list = Sublist::new();
            let mut live: Vec<(String, u32)> = Vec::new();
            for (id, p) in patterns.iter().enumerate() {
                list.insert(p, id as u32);
                live.push((p.clone(), id as u32));
            }
            for r in removals {
                if live.is_empty() { break; }
                let (p, id) = live.remove(r.index(live.len()));
                prop_assert!(list.remove(&p, &id));
            }
            prop_assert_eq!(list.len(), live.len());
            for s in &subjects {
                let mut expected: Vec<u32> =
                    live.iter().filter(|(p, _)| matches(p, s)).map(|(_, id)| *id).collect();
                expected.sort_unstable();
                prop_assert_eq!(matched(&list, s), expected, "subject {}", s);
            }
        }
    }
}

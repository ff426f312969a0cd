//! Which stream already captures a subject that a new pattern would capture too: a trie of the
//! streams' subject patterns, so that adding the hundred-thousandth stream checks a few nodes
//! instead of every pattern there is.
//!
//! Two patterns overlap when some literal subject matches both (`sluice_protocol::subject::
//! overlaps`): a `*` meets any one token, a `>` any one or more. The trie answers the same question
//! as that function applied to every pattern, and a test holds the two together.

use std::collections::HashMap;

/// The subject patterns of every stream, by token.
#[derive(Default)]
pub struct SubjectIndex {
    root: Node,
}

#[derive(Default)]
struct Node {
    children: HashMap<Box<str>, Node>,
    /// The streams whose pattern ends at this node, with the pattern.
    ends: Vec<(Box<str>, Box<str>)>,
}

/// The first stream found whose pattern overlaps the one asked about: (its pattern, its name).
pub type Found<'a> = (&'a str, &'a str);

impl SubjectIndex {
    /// Notes that `stream` captures `pattern`.
    pub fn insert(&mut self, pattern: &str, stream: &str) {
        let mut node = &mut self.root;
        for token in pattern.split('.') {
            node = node.children.entry(token.into()).or_default();
        }
        node.ends.push((pattern.into(), stream.into()));
    }

    /// Forgets that `stream` captures `pattern`; empty branches are dropped.
    pub fn remove(&mut self, pattern: &str, stream: &str) {
        let tokens: Vec<&str> = pattern.split('.').collect();
        remove_from(&mut self.root, &tokens, stream);
    }

    /// A pattern of another stream than `except` that overlaps `pattern`, if any.
    pub fn overlapping<'a>(&'a self, pattern: &str, except: &str) -> Option<Found<'a>> {
        let tokens: Vec<&str> = pattern.split('.').collect();
        find(&self.root, &tokens, except)
    }
}

fn remove_from(node: &mut Node, tokens: &[&str], stream: &str) -> bool {
    match tokens.split_first() {
        None => node.ends.retain(|(_, s)| &**s != stream),
        Some((token, rest)) => {
            if let Some(child) = node.children.get_mut(*token) {
                if remove_from(child, rest, stream) {
                    node.children.remove(*token);
                }
            }
        }
    }
    node.ends.is_empty() && node.children.is_empty()
}

fn own<'a>(ends: &'a [(Box<str>, Box<str>)], except: &str) -> Option<Found<'a>> {
    ends.iter()
        .find(|(_, s)| &**s != except)
        .map(|(p, s)| (&**p, &**s))
}

/// Searches the patterns below `node` that overlap `tokens`.
fn find<'a>(node: &'a Node, tokens: &[&str], except: &str) -> Option<Found<'a>> {
    let Some((&token, rest)) = tokens.split_first() else {
        // Both patterns end here. (A `>` below would need one more token.)
        return own(&node.ends, except);
    };
    // A stored `>` here takes this token and any after it.
    if let Some(found) = node.children.get(">").and_then(|c| own(&c.ends, except)) {
        return Some(found);
    }
    match token {
        // Ours takes this token and any after: every pattern with one more token or more.
        ">" => node.children.values().find_map(|c| any_end(c, except)),
        "*" => node
            .children
            .iter()
            .filter(|(t, _)| &***t != ">")
            .find_map(|(_, c)| find(c, rest, except)),
        literal => [literal, "*"]
            .iter()
            .filter_map(|t| node.children.get(*t))
            .find_map(|c| find(c, rest, except)),
    }
}

/// Any pattern ending at or below `node`.
fn any_end<'a>(node: &'a Node, except: &str) -> Option<Found<'a>> {
    own(&node.ends, except).or_else(|| node.children.values().find_map(|c| any_end(c, except)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use sluice_protocol::subject::overlaps;

    fn pattern() -> impl Strategy<Value = String> {
        let token = prop_oneof!["a", "b", "c", Just("*".to_string())];
        (proptest::collection::vec(token, 1..4), proptest::bool::ANY).prop_map(
            |(mut tokens, tail)| {
                if tail {
                    tokens.push(">".into());
                }
                tokens.join(".")
            },
        )
    }

    proptest! {
        #[test]
        fn the_index_finds_an_overlap_exactly_when_some_pattern_overlaps(
            stored in proptest::collection::vec(pattern(), 0..12),
            removed in proptest::collection::vec(any::<prop::sample::Index>(), 0..4),
            asked in pattern(),
        ) {
            let mut index = SubjectIndex::default();
            let mut kept: Vec<(String, String)> = Vec::new();
            for (i, p) in stored.iter().enumerate() {
                index.insert(p, &format!("s{i}"));
                kept.push((p.clone(), format!("s{i}")));
            }
            for r in removed {
                if kept.is_empty() {
                    break;
                }
                let (p, s) = kept.remove(r.index(kept.len()));
                index.remove(&p, &s);
            }
            let naive = kept.iter().any(|(p, s)| s != "s0" && overlaps(p, &asked));
            let found = index.overlapping(&asked, "s0");
            prop_assert_eq!(found.is_some(), naive, "{:?} against {:?}", asked, kept);
            if let Some((p, s)) = found {
                prop_assert!(overlaps(p, &asked) && s != "s0");
            }
        }
    }

    #[test]
    fn per_user_streams_do_not_overlap_but_a_wildcard_over_them_does() {
        let mut index = SubjectIndex::default();
        for n in 0..1000 {
            index.insert(&format!("users.{n}.>"), &format!("user{n}"));
        }
        assert_eq!(index.overlapping("users.1000.>", ""), None);
        assert_eq!(
            index.overlapping("users.7.x", ""),
            Some(("users.7.>", "user7"))
        );
        assert!(index.overlapping("users.*.x", "").is_some());
        assert!(index.overlapping(">", "").is_some());
        assert_eq!(index.overlapping("users.7", ""), None);
        assert_eq!(index.overlapping("users.7.>", "user7"), None);
    }
}

//! Stream sequences. A JetStream stream is one ordered log whose sequences start at 1; a Sluice
//! stream is `partitions` logs whose offsets start at 0. A message at `offset` in `partition` has
//! the sequence `offset × partitions + partition + 1`: on a one-partition stream (what the
//! JetStream API creates) that is simply `offset + 1`, and on a partitioned stream every message
//! still has one sequence that names it, sequences grow within a partition, and the partition
//! and offset can be read back from it. Across partitions the sequences interleave and leave
//! gaps where one partition is ahead of another.

/// The sequence of the message at `offset` in `partition`; `None` past `u64`.
pub fn seq_of(partition: u32, offset: u64, partitions: u32) -> Option<u64> {
    let partitions = u64::from(partitions.max(1));
    debug_assert!(u64::from(partition) < partitions);
    offset
        .checked_mul(partitions)?
        .checked_add(u64::from(partition))?
        .checked_add(1)
}

/// The partition and offset of a sequence; `None` for 0, which names no message.
pub fn position_of(seq: u64, partitions: u32) -> Option<(u32, u64)> {
    let index = seq.checked_sub(1)?;
    let partitions = u64::from(partitions.max(1));
    let partition = u32::try_from(index % partitions).ok()?;
    Some((partition, index / partitions))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn one_partition_counts_from_one() {
        assert_eq!(seq_of(0, 0, 1), Some(1));
        assert_eq!(seq_of(0, 41, 1), Some(42));
        assert_eq!(position_of(42, 1), Some((0, 41)));
        assert_eq!(position_of(0, 1), None);
    }

    proptest! {
        #[test]
        fn sequences_name_one_position(partitions in 1u32..2048, partition in 0u32..2048, offset in 0u64..(1 << 50)) {
            let partition = partition % partitions;
            let seq = seq_of(partition, offset, partitions).unwrap();
            prop_assert_eq!(position_of(seq, partitions), Some((partition, offset)));
            prop_assert!(seq_of(partition, offset + 1, partitions).unwrap() > seq);
        }
    }
}

//! Append, read back, roll, restart: the basic life of a partition log.
mod common;

use common::*;
use runnel_engine::{batch, PartitionLog};

#[test]
fn append_read_roll_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("topic-0");
    run(async move {
        let log = PartitionLog::open(&path, small_config(), context())
            .await
            .unwrap();
        let mut expected = Vec::new();
        for tag in 0..200u64 {
            let result = log
                .append(tagged_batch(tag, 3, 100, 1000 + tag as i64))
                .await
                .unwrap();
            assert_eq!(result.base_offset, tag as i64 * 3);
            expected.push(result.base_offset);
        }
        assert!(log.segment_count() > 1, "small segments must roll");
        let batches = read_all(&log, 0);
        assert_eq!(
            batches.iter().map(|(base, _)| *base).collect::<Vec<_>>(),
            expected
        );
        // A read starting inside a batch returns that whole batch.
        let plan = log.read(301, 1).unwrap();
        let first = split_batches(&plan.to_vec().unwrap());
        assert_eq!(first[0].0, 300);
        // Timestamp lookup.
        let found = log.offset_for_timestamp(1000 + 150).unwrap().unwrap();
        assert_eq!(found.offset, 450);
        assert!(log.offset_for_timestamp(5000).unwrap().is_none());
        log.close().await.unwrap();

        let log = PartitionLog::open(&path, small_config(), context())
            .await
            .unwrap();
        assert_eq!(log.log_end_offset(), 600);
        let again = read_all(&log, 0);
        assert_eq!(again, batches);
        let result = log.append(tagged_batch(999, 2, 10, 5000)).await.unwrap();
        assert_eq!(result.base_offset, 600);
        // Read a batch back and check it validates as a client would see it.
        let plan = log.read(600, 1 << 20).unwrap();
        let bytes = plan.to_vec().unwrap();
        batch::scan_batch(&bytes, 1 << 20).unwrap().unwrap();
        log.close().await.unwrap();
    });
}

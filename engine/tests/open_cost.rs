//! Opening a log costs its tail, not its total: sealed segments are neither read nor scanned at
//! open (their indexes load on first use).
mod common;

use common::*;
use runnel_engine::{LogConfig, PartitionLog};
use std::os::unix::fs::FileExt;

#[test]
fn open_reads_only_the_newest_segment() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big-0");
    let config = LogConfig {
        segment_bytes: 32 * 1024,
        index_interval_bytes: 1024,
        preallocate_bytes: 32 * 1024,
        ..LogConfig::default()
    };
    let open_path = path.clone();
    let open_config = config.clone();
    let (segments, end) = run(async move {
        let log = PartitionLog::open(&open_path, open_config, context())
            .await
            .unwrap();
        for tag in 0..400u64 {
            log.append(tagged_batch(tag, 4, 200, tag as i64))
                .await
                .unwrap();
        }
        let bases = log.segment_base_offsets();
        let end = log.log_end_offset();
        drop(log); // unclean: recovery must scan the newest segment
        (bases, end)
    });
    assert!(
        segments.len() > 10,
        "expected many segments, got {}",
        segments.len()
    );

    // Overwrite the middle of every sealed segment (and its index) with garbage of the same
    // size. If open scanned or validated sealed segments it would cut the log or fail.
    for base in &segments[..segments.len() - 1] {
        let log_path = path.join(format!("{base:020}.log"));
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(&log_path)
            .unwrap();
        let size = file.metadata().unwrap().len();
        file.write_all_at(&vec![0xA5; (size / 2) as usize], size / 4)
            .unwrap();
        std::fs::write(path.join(format!("{base:020}.index")), b"garbage").unwrap();
    }

    run(async move {
        let log = PartitionLog::open(&path, config, context()).await.unwrap();
        assert_eq!(
            log.log_end_offset(),
            end,
            "the newest segment was recovered whole"
        );
        assert_eq!(
            log.segment_base_offsets(),
            segments,
            "no segment was dropped"
        );
        // The newest segment reads fine; appends continue at the end.
        let last_base = *segments.last().unwrap();
        let batches = read_all(&log, last_base);
        assert!(!batches.is_empty());
        let appended = log.append(tagged_batch(9999, 1, 10, 0)).await.unwrap();
        assert_eq!(appended.base_offset, end);
        log.close().await.unwrap();
    });
}

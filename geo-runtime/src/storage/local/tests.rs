//! The local store's unit tests.

use super::*;

fn chunks(
    parts: Vec<Result<&'static [u8], &'static str>>,
) -> impl Stream<Item = Result<Bytes, &'static str>> + Send {
    futures_util::stream::iter(parts.into_iter().map(|p| p.map(Bytes::from_static)))
}

fn sha(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

#[tokio::test]
async fn writes_durably_and_leaves_nothing_on_failure() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = LocalStore::new(dir.path());
    let key = ObjectKey::parse("a/b/obj").expect("key");
    let w = store
        .write(
            &key,
            chunks(vec![Ok(b"hello "), Ok(b"world")]),
            Some(11),
            Some(sha(b"hello world")),
        )
        .await
        .expect("write");
    assert_eq!(w.size, 11);
    assert_eq!(
        std::fs::read(store.path(&key)).expect("read"),
        b"hello world"
    );

    // A failing source, a wrong checksum and a short body: the old bytes stay, no temp file.
    let fails = [
        store
            .write(
                &key,
                chunks(vec![Ok(b"new"), Err("connection reset")]),
                None,
                None,
            )
            .await,
        store
            .write(
                &key,
                chunks(vec![Ok(b"other")]),
                None,
                Some(sha(b"hello world")),
            )
            .await,
        store
            .write(&key, chunks(vec![Ok(b"short")]), Some(100), None)
            .await,
    ];
    assert!(
        matches!(fails[0], Err(StorageError::Source { bytes: 3, .. })),
        "{:?}",
        fails[0]
    );
    assert!(
        matches!(fails[1], Err(StorageError::ChecksumMismatch { .. })),
        "{:?}",
        fails[1]
    );
    assert!(
        matches!(
            fails[2],
            Err(StorageError::SizeMismatch {
                expected: 100,
                actual: 5
            })
        ),
        "{:?}",
        fails[2]
    );
    assert_eq!(
        std::fs::read(store.path(&key)).expect("read"),
        b"hello world"
    );
    let names: Vec<_> = std::fs::read_dir(dir.path().join("a/b"))
        .expect("ls")
        .map(|e| e.expect("e").file_name())
        .collect();
    assert_eq!(names, ["obj"], "temp files left behind");

    assert!(store.delete(&key).await.expect("delete"));
    assert!(!store.delete(&key).await.expect("delete again"));
    assert!(
        store
            .read_or_open(&key, 1 << 20)
            .await
            .expect("open")
            .is_none()
    );
}

#[tokio::test]
async fn a_staged_batch_is_published_together_and_a_dropped_one_leaves_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = LocalStore::new(dir.path());
    let a = ObjectKey::parse("d/a").expect("key");
    let b = ObjectKey::parse("d/b").expect("key");
    let sa = store
        .stage_bytes(&a, Bytes::from_static(b"aaa"), Some(sha(b"aaa")))
        .await
        .expect("stage");
    let sb = store
        .stage_stream(&b, chunks(vec![Ok(b"b"), Ok(b"bb")]), Some(3), None)
        .await
        .expect("stage");
    assert!(
        !store.path(&a).exists() && !store.path(&b).exists(),
        "staged objects are not at their final paths"
    );
    let results = store.commit(vec![sa, sb]).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert_eq!(std::fs::read(store.path(&a)).expect("a"), b"aaa");
    assert_eq!(std::fs::read(store.path(&b)).expect("b"), b"bbb");
    // A wrong checksum is refused at staging; a staged object dropped uncommitted vanishes.
    assert!(
        store
            .stage_bytes(&a, Bytes::from_static(b"x"), Some(sha(b"y")))
            .await
            .is_err()
    );
    drop(
        store
            .stage_bytes(
                &ObjectKey::parse("d/c").expect("key"),
                Bytes::from_static(b"c"),
                None,
            )
            .await
            .expect("stage"),
    );
    let mut names: Vec<_> = std::fs::read_dir(dir.path().join("d"))
        .expect("ls")
        .map(|e| e.expect("e").file_name())
        .collect();
    names.sort();
    assert_eq!(names, ["a", "b"]);
}

#[tokio::test]
async fn a_body_over_several_writeback_windows_arrives_whole() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = LocalStore::new(dir.path());
    let key = ObjectKey::parse("big/obj").expect("key");
    // 20 MiB + 1 byte in 64 KiB network-sized chunks: three writeback windows, a partial
    // last write batch.
    let data: Vec<u8> = (0..(20 << 20) + 1).map(|i: u32| (i % 251) as u8).collect();
    let parts: Vec<Result<Bytes, &'static str>> = data
        .chunks(64 * 1024)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    let staged = store
        .stage_stream(
            &key,
            futures_util::stream::iter(parts),
            Some(data.len() as u64),
            Some(sha(&data)),
        )
        .await
        .expect("stage");
    assert!(staged.durable, "a streamed object is flushed by its writer");
    assert_eq!(staged.written().size, data.len() as u64);
    let results = store.commit(vec![staged]).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert!(std::fs::read(store.path(&key)).expect("read") == data);
}

#[tokio::test]
async fn stale_temp_files_are_removed() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("x/y")).expect("mkdir");
    std::fs::write(dir.path().join("x/y/.geo-tmp-123"), b"partial").expect("write");
    std::fs::write(dir.path().join("x/y/keep"), b"data").expect("write");
    let store = LocalStore::new(dir.path());
    assert_eq!(store.remove_stale_temp_files().await.expect("clean"), 1);
    assert!(dir.path().join("x/y/keep").exists());
    assert!(!dir.path().join("x/y/.geo-tmp-123").exists());
}

//! The append-only log: replay (pure), torn-tail truncation, seal and resume.

use std::fs;

use fake_peers::store::{LOG_FILE, PutError, Store, render_record, replay};

#[test]
fn an_empty_log_replays_to_nothing() {
    let r = replay(b"").unwrap();
    assert!(r.map.is_empty());
    assert_eq!((r.last_seq, r.valid_len, r.torn_tail_len), (0, 0, 0));
}

#[test]
fn records_replay_in_order_and_later_values_win() {
    let log = b"1 a x\n2 b y\n3 a z\n";
    let r = replay(log).unwrap();
    assert_eq!(r.last_seq, 3);
    assert_eq!(r.map.get("a").map(String::as_str), Some("z"));
    assert_eq!(r.map.get("b").map(String::as_str), Some("y"));
    assert_eq!(r.valid_len, log.len() as u64);
    assert_eq!(r.fingerprint.len, log.len() as u64);
}

#[test]
fn a_torn_last_line_is_ignored() {
    for torn in [&b"3"[..], b"3 a", b"3 a zz"] {
        let mut log = b"1 a x\n2 b y\n".to_vec();
        let whole = log.len() as u64;
        log.extend_from_slice(torn);
        let r = replay(&log).unwrap();
        assert_eq!(r.last_seq, 2, "{torn:?}");
        assert_eq!(r.map.get("a").map(String::as_str), Some("x"));
        assert_eq!(r.valid_len, whole);
        assert_eq!(r.torn_tail_len, torn.len() as u64);
        assert_eq!(
            r.fingerprint,
            replay(&log[..whole as usize]).unwrap().fingerprint
        );
    }
}

#[test]
fn damage_before_the_last_line_is_an_error_naming_where() {
    let cases: &[(&[u8], u64)] = &[
        (b"1 a x\ngarbage\n2 b y\n", 2),
        (b"1 a x\n3 b y\n", 2),
        (b"1 a x\n1 b y\n", 2),
        (b"x a b\n", 1),
        (b"1 a\n", 1),
        (b"1 a b c\n", 1),
    ];
    for (log, line_no) in cases {
        let e = replay(log).unwrap_err();
        assert_eq!(e.line_no, *line_no, "{e}");
        assert!(e.to_string().contains("corrupt"), "{e}");
    }
}

#[test]
fn open_truncates_a_torn_tail_and_appends_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(LOG_FILE);
    fs::write(&path, format!("{}2 b", render_record(1, "a", "x"))).unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    assert_eq!(store.last_seq(), 1);
    assert_eq!(fs::read(&path).unwrap(), b"1 a x\n");
    assert_eq!(store.put("b", "y").unwrap(), 2);
    assert_eq!(fs::read(&path).unwrap(), b"1 a x\n2 b y\n");
    drop(store);
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.get("b"), Some("y"));
    assert_eq!(store.last_seq(), 2);
}

#[test]
fn open_refuses_a_corrupt_log() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join(LOG_FILE), b"1 a x\nnonsense\n2 b y\n").unwrap();
    let e = Store::open(dir.path()).unwrap_err();
    assert!(e.to_string().contains("line 2"), "{e}");
}

#[test]
fn a_sealed_store_refuses_writes_and_resume_rereads_the_disk() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    store.put("a", "1").unwrap();
    let sealed = store.seal().unwrap();
    assert_eq!(sealed.last_seq, 1);
    assert_eq!(store.seal().unwrap(), sealed, "seal is idempotent");
    assert!(matches!(store.put("b", "2"), Err(PutError::Sealed)));

    // While sealed another process (the successor) may append.
    let mut other = Store::open(dir.path()).unwrap();
    assert_eq!(other.put("c", "3").unwrap(), 2);
    drop(other);

    store.resume().unwrap();
    store.resume().unwrap();
    assert_eq!(store.get("c"), Some("3"));
    assert_eq!(store.put("d", "4").unwrap(), 3);
    assert_ne!(store.seal().unwrap().fingerprint, sealed.fingerprint);
}

//! The incumbent side against a hand-driven supervisor over a real Unix
//! socket: session exclusivity, ordering rules, flock hand-over, recovery,
//! heartbeats.

mod incumbent_support;

use std::os::unix::net::UnixStream;
use std::time::Duration;

use handoff::lock::is_locked;
use handoff::{HandoffId, Message, ServeOutcome, Side};

use incumbent_support::*;

#[test]
fn full_session_releases_flock_before_seal_complete_and_commits() {
    let mut f = start(false, Duration::ZERO);
    assert!(is_locked(&f.data).unwrap());
    let (mut s, id) = session(&f.sock);
    prepare(&mut s, id);
    assert!(matches!(
        read_skipping_heartbeats(&mut s).0,
        Message::Drained {
            accept_closed: true,
            ..
        }
    ));
    assert!(
        is_locked(&f.data).unwrap(),
        "flock must be held until the seal"
    );
    send(&mut s, Message::SealRequest { handoff_id: id });
    let (m, _) = read_skipping_heartbeats(&mut s);
    assert!(
        matches!(m, Message::SealComplete { handoff_id, ref last_revision_per_shard, .. } if handoff_id == id && last_revision_per_shard == &vec![7]),
        "{m:?}"
    );
    // SealComplete is written after the release: the flock is free now.
    assert!(!is_locked(&f.data).unwrap());
    send(&mut s, Message::Commit { handoff_id: id });
    let outcome = f.serve.take().unwrap().join().unwrap().unwrap();
    assert_eq!(outcome, ServeOutcome::Committed { handoff_id: id });
    assert_eq!(f.calls.lock().unwrap().log, vec!["drain", "seal"]);
}

#[test]
fn a_second_supervisor_is_refused_while_a_session_runs() {
    let f = start(false, Duration::ZERO);
    let (mut first, id) = session(&f.sock);
    // Before the incumbent has read our HelloAck it may not know the id yet;
    // once it answered Drained it does.
    prepare(&mut first, id);
    assert!(matches!(
        read_skipping_heartbeats(&mut first).0,
        Message::Drained { .. }
    ));
    let mut second = UnixStream::connect(&f.sock).unwrap();
    match read(&mut second) {
        Message::Refused { reason } => assert!(
            reason.contains("another supervisor") && reason.contains(&id.to_string()),
            "{reason}"
        ),
        m => panic!("expected Refused, got {m:?}"),
    }
    // The first session is unaffected.
    send(&mut first, Message::SealRequest { handoff_id: id });
    assert!(matches!(
        read_skipping_heartbeats(&mut first).0,
        Message::SealComplete { .. }
    ));
}

#[test]
fn commit_before_seal_complete_is_rejected_and_the_incumbent_keeps_serving() {
    let f = start(false, Duration::ZERO);
    let (mut s, id) = session(&f.sock);
    prepare(&mut s, id);
    read_skipping_heartbeats(&mut s);
    send(&mut s, Message::Commit { handoff_id: id });
    // The incumbent ends the session and resumes with the flock.
    let mut buf = [0u8; 1];
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    assert_eq!(
        std::io::Read::read(&mut s, &mut buf).unwrap(),
        0,
        "session closed"
    );
    f.calls.wait_until("resume after the rejected Commit", |c| {
        c.log.contains(&"resume")
    });
    assert!(is_locked(&f.data).unwrap());
    assert!(!f.calls.lock().unwrap().log.contains(&"seal"));
    // And a new session is accepted.
    let _ = session(&f.sock);
}

#[test]
fn a_wrong_handoff_id_is_rejected() {
    let f = start(false, Duration::ZERO);
    let (mut s, _id) = session(&f.sock);
    prepare(&mut s, HandoffId::new());
    let mut buf = [0u8; 1];
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    assert_eq!(std::io::Read::read(&mut s, &mut buf).unwrap(), 0);
    assert!(f.calls.lock().unwrap().log.is_empty(), "never drained");
    assert!(is_locked(&f.data).unwrap());
}

#[test]
fn seal_failure_keeps_the_flock_and_resumes() {
    let f = start(true, Duration::ZERO);
    let (mut s, id) = session(&f.sock);
    prepare(&mut s, id);
    read_skipping_heartbeats(&mut s);
    send(&mut s, Message::SealRequest { handoff_id: id });
    match read_skipping_heartbeats(&mut s).0 {
        Message::SealFailed { error, .. } => assert_eq!(error, "disk on fire"),
        m => panic!("expected SealFailed, got {m:?}"),
    }
    f.calls
        .wait_until("resume after SealFailed", |c| c.log.contains(&"resume"));
    assert!(is_locked(&f.data).unwrap());
}

#[test]
fn a_supervisor_lost_after_the_seal_makes_the_incumbent_retake_the_flock() {
    let f = start(false, Duration::ZERO);
    let (mut s, _id) = sealed_session(&f.sock);
    // The supervisor goes away: the incumbent sees the end of the stream.
    s.shutdown(std::net::Shutdown::Write).unwrap();
    f.calls
        .wait_until("resume after the supervisor vanished", |c| {
            c.log.contains(&"resume")
        });
    assert!(is_locked(&f.data).unwrap());
    // The session is over once the incumbent closes its side; only then
    // is a new supervisor not a second session.
    assert_closed_without_heartbeats(&mut s, "the supervisor vanished");
    let _ = session(&f.sock);
}

/// Regression: a supervisor that connected while the previous session was
/// still winding up (its supervisor gone, the service resuming) was refused
/// as a second supervisor. It now waits for that session to end.
#[test]
fn a_supervisor_that_connects_while_the_last_session_winds_up_is_not_refused() {
    let f = start_with(Options {
        hold_resume: true,
        ..Options::default()
    });
    let (s, _id) = sealed_session(&f.sock);
    drop(s);
    f.calls
        .wait_until("resume after the supervisor vanished", |c| {
            c.log.contains(&"resume")
        });
    // The session is still in progress (the resume is held): connect now.
    let mut next = UnixStream::connect(&f.sock).unwrap();
    next.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    match handoff::frame::read_message(&mut next) {
        Err(handoff::Error::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("expected the connection to wait for the session's end, got {other:?}"),
    }
    f.calls.release_resume();
    match read(&mut next) {
        Message::Hello { role, .. } => assert_eq!(role, Side::Incumbent),
        m => panic!("expected Hello once the last session ended, got {m:?}"),
    }
}

#[test]
fn resume_after_abort_retakes_the_flock() {
    let f = start(false, Duration::ZERO);
    let (mut s, id) = sealed_session(&f.sock);
    assert!(!is_locked(&f.data).unwrap());
    send(&mut s, Message::ResumeAfterAbort { handoff_id: id });
    f.calls.wait_until("resume after ResumeAfterAbort", |c| {
        c.log.contains(&"resume")
    });
    assert!(is_locked(&f.data).unwrap());
}

#[test]
fn heartbeats_flow_while_drain_runs() {
    let f = start(false, Duration::from_millis(200));
    let (mut s, id) = session(&f.sock);
    prepare(&mut s, id);
    let (m, beats) = read_skipping_heartbeats(&mut s);
    assert!(matches!(m, Message::Drained { .. }));
    // 200 ms of drain at a 20 ms interval: expect several, allow for a slow
    // scheduler.
    assert!(beats >= 3, "only {beats} heartbeats during a 200 ms drain");
}

/// Regression (found by chaos, seed 0x901 episode 596): the successor sent
/// Ready and renamed its control socket over the path, then died with the
/// supervisor before Commit. The flock was free, and the incumbent retook it
/// and served on without a reachable control socket. It must concede.
#[test]
fn a_successor_that_rebound_the_path_and_died_is_not_overridden() {
    let mut f = start(false, Duration::ZERO);
    let (s, id) = sealed_session(&f.sock);
    // The successor's control socket replaces the path; the successor is
    // then gone (nothing holds the flock).
    let successor_sock = f.sock.with_file_name("successor.sock");
    let successor_listener = std::os::unix::net::UnixListener::bind(&successor_sock).unwrap();
    std::fs::rename(&successor_sock, &f.sock).unwrap();
    drop(successor_listener);
    assert!(!is_locked(&f.data).unwrap());
    // The supervisor dies before Commit.
    drop(s);
    f.calls
        .wait_until("the incumbent to concede or resume", |c| {
            c.serve_returned || c.log.contains(&"resume")
        });
    assert!(
        !f.calls.lock().unwrap().log.contains(&"resume"),
        "the incumbent resumed after the successor had taken over"
    );
    let outcome = f.serve.take().unwrap().join().unwrap().unwrap();
    assert_eq!(outcome, ServeOutcome::Superseded { handoff_id: id });
}

/// A supervisor may ask for any deadline; a sealed incumbent that lost it
/// waits for a successor that holds the flock at most `max_deadline`
/// (400 ms here), not the 584 million years `u64::MAX` ms would be.
#[test]
fn a_huge_supervisor_deadline_is_capped_by_max_deadline() {
    let mut f = start(false, Duration::ZERO);
    let (mut s, id) = session(&f.sock);
    prepare_with_deadline(&mut s, id, u64::MAX);
    read_skipping_heartbeats(&mut s);
    send(&mut s, Message::SealRequest { handoff_id: id });
    assert!(matches!(
        read_skipping_heartbeats(&mut s).0,
        Message::SealComplete { .. }
    ));
    // A successor holds the flock and never gets to Ready; the supervisor
    // is gone.
    let successor = handoff::DataDirLock::acquire(&f.data).unwrap();
    let lost_at = std::time::Instant::now();
    drop(s);
    f.calls
        .wait_until("the incumbent to give up on the successor", |c| {
            c.serve_returned
        });
    let waited = lost_at.elapsed();
    let outcome = f.serve.take().unwrap().join().unwrap().unwrap();
    assert_eq!(outcome, ServeOutcome::Superseded { handoff_id: id });
    assert!(
        waited < Duration::from_secs(3),
        "waited {waited:?} for a flock holder despite max_deadline 400 ms"
    );
    drop(successor);
}

#[test]
fn heartbeats_flow_while_a_slow_seal_runs() {
    let f = start_with(Options {
        seal_for: Duration::from_millis(200),
        ..Options::default()
    });
    let (mut s, id) = session(&f.sock);
    prepare(&mut s, id);
    assert!(matches!(
        read_skipping_heartbeats(&mut s).0,
        Message::Drained { .. }
    ));
    send(&mut s, Message::SealRequest { handoff_id: id });
    let (m, beats) = read_skipping_heartbeats(&mut s);
    assert!(matches!(m, Message::SealComplete { .. }), "{m:?}");
    // 200 ms of seal at a 20 ms interval: expect several, allow for a slow
    // scheduler.
    assert!(beats >= 3, "only {beats} heartbeats during a 200 ms seal");
}

/// One writer per socket: once `Drained` or `SealComplete` is written the
/// heartbeat is disarmed, and while the incumbent waits for the supervisor's
/// next frame nothing at all may arrive. With a 1 ms interval, a heartbeat
/// thread still armed (or writing late) after either frame shows up at
/// once; many sessions on the same `serve()` also exercise re-arming.
#[test]
fn no_heartbeat_is_written_after_drained_or_seal_complete() {
    let mut f = start_with(Options {
        drain_for: Duration::from_millis(5),
        seal_for: Duration::from_millis(5),
        heartbeat_interval: Duration::from_millis(1),
        ..Options::default()
    });
    let quiet = Duration::from_millis(20);
    let sessions = 20;
    let mut beats = 0;
    for n in 1..=sessions {
        let (mut s, id) = session(&f.sock);
        prepare(&mut s, id);
        let (m, b) = read_skipping_heartbeats(&mut s);
        assert!(matches!(m, Message::Drained { .. }), "{m:?}");
        beats += b;
        assert_nothing_written_for(&mut s, quiet, "Drained");
        send(&mut s, Message::SealRequest { handoff_id: id });
        let (m, b) = read_skipping_heartbeats(&mut s);
        assert!(matches!(m, Message::SealComplete { .. }), "{m:?}");
        beats += b;
        assert_nothing_written_for(&mut s, quiet, "SealComplete");
        if n < sessions {
            send(&mut s, Message::ResumeAfterAbort { handoff_id: id });
            assert_closed_without_heartbeats(&mut s, "ResumeAfterAbort");
        } else {
            send(&mut s, Message::Commit { handoff_id: id });
            assert_closed_without_heartbeats(&mut s, "Commit");
            let outcome = f.serve.take().unwrap().join().unwrap().unwrap();
            assert_eq!(outcome, ServeOutcome::Committed { handoff_id: id });
        }
    }
    // The heartbeat did run (about 10 per session), so the checks above
    // were not vacuous.
    assert!(beats >= 5, "only {beats} heartbeats in {sessions} sessions");
}

/// A supervisor that stops reading (alive, but hung) fills the socket with
/// heartbeats. Each write is bounded by `liveness_timeout` (1 s here), so
/// the heartbeat gives up, the drain's end is not held up for ever behind a
/// blocked heartbeat write, `Drained` cannot be written either, and the
/// incumbent treats the supervisor as lost: it resumes, flock held.
#[test]
fn a_supervisor_that_stops_reading_is_lost_not_waited_for_forever() {
    // A 1 ms heartbeat fills the socket's send buffer in about 300 ms (each
    // small frame costs about 1 KiB of it); the drain lasts long enough for
    // that on a slow machine too.
    let f = start_with(Options {
        drain_for: Duration::from_millis(1000),
        heartbeat_interval: Duration::from_millis(1),
        ..Options::default()
    });
    let (mut s, id) = session(&f.sock);
    prepare(&mut s, id);
    // Never read again; keep the socket open.
    f.calls
        .wait_until("resume after the supervisor stopped reading", |c| {
            c.count("resume") == 1
        });
    assert!(is_locked(&f.data).unwrap());
    drop(s);
}

/// A heartbeat that cannot be written (the supervisor went away mid-drain)
/// stops beating for that session, not for the next one.
#[test]
fn a_failed_heartbeat_write_stops_beating_for_that_session_only() {
    let f = start_with(Options {
        drain_for: Duration::from_millis(150),
        heartbeat_interval: Duration::from_millis(10),
        ..Options::default()
    });
    let (mut s, id) = session(&f.sock);
    prepare(&mut s, id);
    // Let the drain start, then vanish: the next heartbeat write fails.
    assert!(matches!(read(&mut s), Message::Heartbeat { .. }));
    drop(s);
    f.calls
        .wait_until("resume after the supervisor vanished", |c| {
            c.count("resume") == 1
        });
    assert!(is_locked(&f.data).unwrap());
    let (mut s, id) = session(&f.sock);
    prepare(&mut s, id);
    let (m, beats) = read_skipping_heartbeats(&mut s);
    assert!(matches!(m, Message::Drained { .. }), "{m:?}");
    assert!(
        beats >= 3,
        "only {beats} heartbeats during a 150 ms drain after a failed session"
    );
}

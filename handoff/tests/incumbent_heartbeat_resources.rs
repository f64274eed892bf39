//! One `serve()` runs one heartbeat thread for all its sessions: many
//! sessions with heartbeats leave the process's descriptor and thread
//! counts unchanged (no socket clone or thread kept from one session to the
//! next). Alone in its own test binary so that no other test's descriptors
//! or threads come and go meanwhile.

mod incumbent_support;

use std::time::Duration;

use handoff::Message;

use incumbent_support::*;

fn count(dir: &str) -> usize {
    std::fs::read_dir(dir).unwrap().count()
}

#[test]
fn descriptors_and_threads_stay_equal_across_many_sessions() {
    let f = start_with(Options {
        drain_for: Duration::from_millis(3),
        seal_for: Duration::from_millis(3),
        heartbeat_interval: Duration::from_millis(1),
        ..Options::default()
    });
    let mut beats = 0;
    let mut run_session = || {
        let (mut s, id) = session(&f.sock);
        prepare(&mut s, id);
        beats += read_skipping_heartbeats(&mut s).1;
        send(&mut s, Message::SealRequest { handoff_id: id });
        let (m, b) = read_skipping_heartbeats(&mut s);
        assert!(matches!(m, Message::SealComplete { .. }), "{m:?}");
        beats += b;
        send(&mut s, Message::ResumeAfterAbort { handoff_id: id });
        // End of stream only once every incumbent-side descriptor of the
        // session is closed, heartbeat clone included.
        assert_closed_without_heartbeats(&mut s, "ResumeAfterAbort");
    };
    for _ in 0..5 {
        run_session();
    }
    let (fds, threads) = (count("/proc/self/fd"), count("/proc/self/task"));
    for _ in 0..50 {
        run_session();
    }
    assert_eq!(
        (count("/proc/self/fd"), count("/proc/self/task")),
        (fds, threads),
        "(descriptors, threads) after 5 and after 55 sessions"
    );
    assert!(beats >= 10, "only {beats} heartbeats in 55 sessions");
}

//! Frame reads are bounded per frame, not per system call: a peer that
//! sends one byte just inside each read timeout is cut off at the frame's
//! deadline (real sockets, a real dripping peer thread).

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use handoff::frame::{encode, read_frame, read_message_within};
use handoff::{Error, Message};

/// Write `frame` one byte at a time, `gap` apart, until done or the reader
/// hangs up.
fn drip(mut peer: UnixStream, frame: Vec<u8>, gap: Duration) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        for byte in frame {
            if peer.write_all(&[byte]).is_err() {
                return;
            }
            // The drip itself is the misbehaviour under test.
            std::thread::sleep(gap);
        }
    })
}

fn heartbeat_frame() -> Vec<u8> {
    // ~30 bytes: at 40 ms a byte, over a second to arrive whole.
    encode(1, &Message::Heartbeat { ts_ms: 123_456 }).unwrap()
}

#[test]
fn a_slow_drip_peer_is_cut_off_at_the_frame_deadline() {
    let (mut ours, theirs) = UnixStream::pair().unwrap();
    let frame = heartbeat_frame();
    assert!(frame.len() * 40 > 1000, "the drip must outlast the bound");
    let dripper = drip(theirs, frame, Duration::from_millis(40));
    let bound = Duration::from_millis(300);
    let started = Instant::now();
    let got = read_frame(&mut ours, None, bound, "Heartbeat");
    let took = started.elapsed();
    assert!(matches!(got, Err(Error::Timeout("Heartbeat"))), "{got:?}");
    // Each byte came well inside the bound: only a frame deadline stops it.
    assert!(
        took >= bound && took < bound + Duration::from_millis(250),
        "took {took:?}"
    );
    drop(ours);
    dripper.join().unwrap();
}

#[test]
fn read_message_within_bounds_the_frame_and_a_prompt_frame_passes() {
    let (mut ours, mut theirs) = UnixStream::pair().unwrap();
    let dripper = drip(
        theirs.try_clone().unwrap(),
        heartbeat_frame(),
        Duration::from_millis(40),
    );
    let started = Instant::now();
    let got = read_message_within(&mut ours, Duration::from_millis(200));
    assert!(
        matches!(&got, Err(Error::Io(e)) if handoff::util::is_timeout(e)),
        "{got:?}"
    );
    assert!(
        started.elapsed() < Duration::from_millis(450),
        "{:?}",
        started.elapsed()
    );
    drop(ours);
    dripper.join().unwrap();

    // A frame sent at once is read whole.
    let (mut ours, theirs2) = UnixStream::pair().unwrap();
    theirs = theirs2;
    theirs.write_all(&heartbeat_frame()).unwrap();
    let (_, msg) = read_message_within(&mut ours, Duration::from_millis(200)).unwrap();
    assert_eq!(msg, Message::Heartbeat { ts_ms: 123_456 });
}

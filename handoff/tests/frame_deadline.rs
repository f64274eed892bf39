//! Frame reads are bounded per frame, not per system call: a peer that
//! sends one byte just inside each read timeout is cut off at the frame's
//! deadline (real sockets, a real dripping peer thread), and a real
//! incumbent cuts such a supervisor off and serves on.

mod incumbent_support;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use handoff::frame::{encode, read_frame, read_message_within};
use handoff::{Error, HandoffId, Message};

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

#[test]
fn an_incumbent_cuts_off_a_supervisor_dripping_its_hello_ack_and_serves_on() {
    let mut f = incumbent_support::start(false, Duration::ZERO);
    let hello_timeout = incumbent_support::config().hello_timeout;
    let mut s = UnixStream::connect(&f.sock).unwrap();
    assert!(matches!(
        incumbent_support::read(&mut s),
        Message::Hello { .. }
    ));
    let ack = encode(
        1,
        &Message::HelloAck {
            proto_version_chosen: 1,
            handoff_id: HandoffId::new(),
        },
    )
    .unwrap();
    // One byte well inside the per-read bound, the frame far outside it.
    let gap = hello_timeout / 5;
    assert!(gap * ack.len() as u32 > hello_timeout * 4);
    let started = Instant::now();
    let dripper = drip(s.try_clone().unwrap(), ack, gap);
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut sink = [0u8; 64];
    let closed = loop {
        match s.read(&mut sink) {
            Ok(0) => break Ok(()),
            Ok(_) => {} // a Refused or error frame before the close
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break Ok(()),
            Err(e) => break Err(e),
        }
    };
    let took = started.elapsed();
    assert!(closed.is_ok(), "the incumbent kept the session: {closed:?}");
    assert!(
        took < hello_timeout + Duration::from_millis(500),
        "cut off after {took:?}, the bound is {hello_timeout:?} for the frame"
    );
    drop(s);
    dripper.join().unwrap();
    // It serves on: the next supervisor gets a whole session.
    incumbent_support::commit(&mut f);
}

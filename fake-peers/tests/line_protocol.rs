//! The client line protocol: parsing, rendering and bounded line reads.

use std::io::{BufReader, Cursor};

use fake_peers::line_protocol::{
    LineRead, MAX_LINE_BYTES, Request, Response, parse_request, read_request_line,
};

#[test]
fn requests_parse() {
    let cases: &[(&[u8], Request)] = &[
        (
            b"PUT k v\n",
            Request::Put {
                key: "k".into(),
                value: "v".into(),
            },
        ),
        (
            b"PUT  key   value-with-dashes\r\n",
            Request::Put {
                key: "key".into(),
                value: "value-with-dashes".into(),
            },
        ),
        (b"GET k\n", Request::Get { key: "k".into() }),
        (b"GET k", Request::Get { key: "k".into() }),
        (b"PING\n", Request::Ping),
    ];
    for (line, expected) in cases {
        assert_eq!(
            parse_request(line).as_ref(),
            Ok(expected),
            "{:?}",
            String::from_utf8_lossy(line)
        );
    }
}

#[test]
fn malformed_requests_are_errors_with_a_reason() {
    for bad in [
        &b"\n"[..],
        b"PUT k\n",
        b"PUT k v extra\n",
        b"GET\n",
        b"GET a b\n",
        b"PING pong\n",
        b"put k v\n",
        b"DELETE k\n",
        b"\xff\xfe\n",
    ] {
        let reason = parse_request(bad).expect_err(&String::from_utf8_lossy(bad));
        assert!(!reason.is_empty() && !reason.contains('\n'), "{reason:?}");
    }
}

#[test]
fn responses_render_as_one_line() {
    assert_eq!(Response::Ok { seq: 7 }.render(), "OK 7\n");
    assert_eq!(Response::Value("v".into()).render(), "VALUE v\n");
    assert_eq!(Response::NotFound.render(), "NOTFOUND\n");
    assert_eq!(Response::Pong { pid: 42 }.render(), "PONG 42\n");
    assert_eq!(Response::Err("a\nb".into()).render(), "ERR a b\n");
}

fn read_all(input: &[u8], capacity: usize, max: usize) -> Vec<(LineRead, Vec<u8>)> {
    let mut reader = BufReader::with_capacity(capacity, Cursor::new(input.to_vec()));
    let mut line = Vec::new();
    let mut out = Vec::new();
    loop {
        let r = read_request_line(&mut reader, &mut line, max).unwrap();
        out.push((r, line.clone()));
        if r != LineRead::Line {
            return out;
        }
    }
}

#[test]
fn persistent_connections_yield_one_line_at_a_time() {
    // A tiny buffer forces lines to span several reads.
    let out = read_all(b"PING\nGET k\nPUT k v\n", 3, MAX_LINE_BYTES);
    let lines: Vec<&[u8]> = out.iter().map(|(_, l)| l.as_slice()).collect();
    assert_eq!(lines, [&b"PING\n"[..], b"GET k\n", b"PUT k v\n", b""]);
    assert_eq!(out.last().unwrap().0, LineRead::Eof);
}

#[test]
fn a_partial_line_at_end_of_stream_is_never_a_request() {
    let out = read_all(b"PING\nPUT k", 4, MAX_LINE_BYTES);
    assert_eq!(out.len(), 2);
    assert_eq!(out[0], (LineRead::Line, b"PING\n".to_vec()));
    assert_eq!(out[1].0, LineRead::Eof);
}

#[test]
fn lines_are_capped_newline_included() {
    let max = 8;
    // 7 bytes + newline = 8: fits.
    let out = read_all(b"GET abc\n", 3, max);
    assert_eq!(out[0], (LineRead::Line, b"GET abc\n".to_vec()));
    // 8 bytes + newline = 9: too long, whether or not the newline arrived.
    assert_eq!(read_all(b"GET abcd\n", 3, max)[0].0, LineRead::TooLong);
    assert_eq!(read_all(b"GET abcdefgh", 64, max)[0].0, LineRead::TooLong);
    let long = vec![b'x'; MAX_LINE_BYTES + 10];
    assert_eq!(
        read_all(&long, 8192, MAX_LINE_BYTES)[0].0,
        LineRead::TooLong
    );
}

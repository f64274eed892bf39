//! The kernel's view of Unix sockets through `NETLINK_SOCK_DIAG`
//! (`unix_diag`, as `ss -x` uses it): for each socket, the file it is bound
//! to (its *filesystem* inode, so a socket renamed into place after `bind`
//! is still recognised at its final path) and its peer.
//!
//! `/proc/net/unix` cannot answer either question: it shows the name a
//! socket was bound under, not where the file is now, and no peers. The
//! harness needs both: "who is bound to the control socket path right now",
//! and "is this unbound socket in the incumbent one end of its own internal
//! pair, or an end of a socketpair inherited from a dead supervisor".
//!
//! The request is built and the reply parsed by pure functions over bytes
//! ([`dump_request`], [`parse_messages`]); [`unix_sockets`] is the thin I/O.

use std::collections::HashMap;
use std::io;
use std::os::fd::AsRawFd;

use nix::sys::socket::{
    AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType, recv, sendto, socket,
};

const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_DUMP: u16 = 0x300;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const AF_UNIX: u8 = 1;
const UDIAG_SHOW_NAME: u32 = 0x1;
const UDIAG_SHOW_VFS: u32 = 0x2;
const UDIAG_SHOW_PEER: u32 = 0x4;
const UNIX_DIAG_NAME: u16 = 0;
const UNIX_DIAG_VFS: u16 = 1;
const UNIX_DIAG_PEER: u16 = 2;
const NLMSG_HDRLEN: usize = 16;
/// Bound on reply datagrams read for one dump.
const MAX_DATAGRAMS: usize = 10_000;

/// One Unix socket as the kernel describes it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnixSocket {
    /// Socket (sockfs) inode, as `/proc/<pid>/fd` shows it: `socket:[N]`.
    pub inode: u64,
    /// `SOCK_STREAM` (1), `SOCK_DGRAM` (2), `SOCK_SEQPACKET` (5).
    pub sock_type: u8,
    /// TCP-like state: 10 = listening, 1 = established, 7 = closed/unconnected.
    pub state: u8,
    /// The name it was bound under (`@...` for abstract), if bound.
    pub name: Option<String>,
    /// Filesystem inode and kernel-encoded device of the bound file.
    pub vfs: Option<(u64, u32)>,
    /// The connected peer's socket inode, if any.
    pub peer: Option<u64>,
}

impl UnixSocket {
    /// A listening socket.
    pub fn is_listening(&self) -> bool {
        self.state == 10
    }
}

/// The dump request for every Unix socket, with names, files and peers.
pub fn dump_request(seq: u32) -> Vec<u8> {
    let mut buf = Vec::with_capacity(40);
    buf.extend_from_slice(&40u32.to_ne_bytes());
    buf.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    buf.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    buf.extend_from_slice(&seq.to_ne_bytes());
    buf.extend_from_slice(&0u32.to_ne_bytes());
    // struct unix_diag_req
    buf.push(AF_UNIX);
    buf.push(0);
    buf.extend_from_slice(&0u16.to_ne_bytes());
    buf.extend_from_slice(&u32::MAX.to_ne_bytes()); // every state
    buf.extend_from_slice(&0u32.to_ne_bytes()); // any inode
    buf.extend_from_slice(&(UDIAG_SHOW_NAME | UDIAG_SHOW_VFS | UDIAG_SHOW_PEER).to_ne_bytes());
    buf.extend_from_slice(&[0u8; 8]); // cookie
    debug_assert_eq!(buf.len(), 40);
    buf
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// Parse one reply datagram, appending sockets to `out`. Returns
/// `Ok(true)` once the dump is done.
pub fn parse_messages(datagram: &[u8], out: &mut Vec<UnixSocket>) -> Result<bool, String> {
    let mut at = 0;
    while at + NLMSG_HDRLEN <= datagram.len() {
        let len = u32_at(datagram, at).ok_or("short header")? as usize;
        let kind = u16_at(datagram, at + 4).ok_or("short header")?;
        if len < NLMSG_HDRLEN || at + len > datagram.len() {
            return Err(format!(
                "netlink message of {len} bytes overruns the datagram"
            ));
        }
        let body = &datagram[at + NLMSG_HDRLEN..at + len];
        match kind {
            NLMSG_DONE => return Ok(true),
            NLMSG_ERROR => {
                let errno = u32_at(body, 0).map(|e| -(e as i32)).unwrap_or(0);
                if errno != 0 {
                    return Err(format!(
                        "sock_diag error: {}",
                        io::Error::from_raw_os_error(errno)
                    ));
                }
            }
            SOCK_DIAG_BY_FAMILY => out.push(parse_unix_diag_msg(body)?),
            _ => {}
        }
        at += align4(len);
    }
    Ok(false)
}

fn parse_unix_diag_msg(body: &[u8]) -> Result<UnixSocket, String> {
    // struct unix_diag_msg: family, type, state, pad (u8 each), ino (u32),
    // cookie (2 × u32); then rtattrs.
    if body.len() < 16 {
        return Err("short unix_diag_msg".into());
    }
    let mut sock = UnixSocket {
        sock_type: body[1],
        state: body[2],
        inode: u64::from(u32_at(body, 4).ok_or("short")?),
        ..UnixSocket::default()
    };
    let mut at = 16;
    while at + 4 <= body.len() {
        let rta_len = u16_at(body, at).ok_or("short rtattr")? as usize;
        let rta_type = u16_at(body, at + 2).ok_or("short rtattr")?;
        if rta_len < 4 || at + rta_len > body.len() {
            break;
        }
        let data = &body[at + 4..at + rta_len];
        match rta_type {
            UNIX_DIAG_NAME => {
                let name = match data.first() {
                    Some(0) => format!("@{}", String::from_utf8_lossy(&data[1..])),
                    _ => String::from_utf8_lossy(data)
                        .trim_end_matches('\0')
                        .to_string(),
                };
                sock.name = Some(name);
            }
            UNIX_DIAG_VFS => {
                if let (Some(ino), Some(dev)) = (u32_at(data, 0), u32_at(data, 4)) {
                    sock.vfs = Some((u64::from(ino), dev));
                }
            }
            UNIX_DIAG_PEER => {
                sock.peer = u32_at(data, 0).map(u64::from).filter(|p| *p != 0);
            }
            _ => {}
        }
        at += align4(rta_len);
    }
    Ok(sock)
}

/// Every Unix socket on the machine, by socket inode.
pub fn unix_sockets() -> io::Result<HashMap<u64, UnixSocket>> {
    let fd = socket(
        AddressFamily::Netlink,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkSockDiag,
    )?;
    let request = dump_request(1);
    sendto(
        fd.as_raw_fd(),
        &request,
        &NetlinkAddr::new(0, 0),
        MsgFlags::empty(),
    )?;
    let mut sockets = Vec::new();
    let mut buf = vec![0u8; 1 << 16];
    for _ in 0..MAX_DATAGRAMS {
        let n = recv(fd.as_raw_fd(), &mut buf, MsgFlags::empty())?;
        if n == 0 {
            break;
        }
        if parse_messages(&buf[..n], &mut sockets).map_err(io::Error::other)? {
            return Ok(sockets.into_iter().map(|s| (s.inode, s)).collect());
        }
    }
    Err(io::Error::other("sock_diag dump did not end"))
}

/// Split a kernel-encoded device number (`MAJOR << 20 | MINOR`).
pub fn kernel_dev(dev: u32) -> (u32, u32) {
    (dev >> 20, dev & 0xf_ffff)
}

/// True when the socket is bound to the file at `path` right now (same
/// filesystem inode and device).
pub fn bound_to(sock: &UnixSocket, path: &std::path::Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let (Some((ino, dev)), Ok(meta)) = (sock.vfs, std::fs::symlink_metadata(path)) else {
        return false;
    };
    let (major, minor) = kernel_dev(dev);
    ino == meta.ino()
        && major == nix::sys::stat::major(meta.dev()) as u32
        && minor == nix::sys::stat::minor(meta.dev()) as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::procs::socket_inode;
    use std::os::unix::net::{UnixListener, UnixStream};

    #[test]
    fn request_is_forty_bytes_of_dump() {
        let r = dump_request(7);
        assert_eq!(r.len(), 40);
        assert_eq!(u16_at(&r, 4), Some(SOCK_DIAG_BY_FAMILY));
        assert_eq!(r[16], AF_UNIX);
    }

    #[test]
    fn replies_parse_names_files_and_peers() {
        let mut msg = Vec::new();
        let mut body = vec![AF_UNIX, 1, 10, 0];
        body.extend_from_slice(&4242u32.to_ne_bytes());
        body.extend_from_slice(&[0u8; 8]);
        // NAME "/x/s\0" (5 bytes → padded to 8 with the 4-byte header: 9 → 12)
        body.extend_from_slice(&9u16.to_ne_bytes());
        body.extend_from_slice(&UNIX_DIAG_NAME.to_ne_bytes());
        body.extend_from_slice(b"/x/s\0\0\0\0");
        body.extend_from_slice(&12u16.to_ne_bytes());
        body.extend_from_slice(&UNIX_DIAG_VFS.to_ne_bytes());
        body.extend_from_slice(&77u32.to_ne_bytes());
        body.extend_from_slice(&((8u32 << 20) | 1).to_ne_bytes());
        body.extend_from_slice(&8u16.to_ne_bytes());
        body.extend_from_slice(&UNIX_DIAG_PEER.to_ne_bytes());
        body.extend_from_slice(&99u32.to_ne_bytes());
        msg.extend_from_slice(&((NLMSG_HDRLEN + body.len()) as u32).to_ne_bytes());
        msg.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
        msg.extend_from_slice(&[0u8; 10]);
        msg.extend_from_slice(&body);
        msg.extend_from_slice(&(NLMSG_HDRLEN as u32).to_ne_bytes());
        msg.extend_from_slice(&NLMSG_DONE.to_ne_bytes());
        msg.extend_from_slice(&[0u8; 10]);
        let mut out = Vec::new();
        assert_eq!(parse_messages(&msg, &mut out), Ok(true));
        assert_eq!(out.len(), 1);
        let s = &out[0];
        assert_eq!(s.inode, 4242);
        assert!(s.is_listening());
        assert_eq!(s.name.as_deref(), Some("/x/s"));
        assert_eq!(s.vfs, Some((77, (8 << 20) | 1)));
        assert_eq!(kernel_dev(s.vfs.unwrap().1), (8, 1));
        assert_eq!(s.peer, Some(99));
    }

    #[test]
    fn the_kernel_reports_renamed_sockets_and_pairs() {
        let dir = tempfile::tempdir().unwrap();
        let temp = dir.path().join("c.sock.tmp");
        let path = dir.path().join("c.sock");
        let listener = UnixListener::bind(&temp).unwrap();
        std::fs::rename(&temp, &path).unwrap();
        let (a, b) = UnixStream::pair().unwrap();
        let all = unix_sockets().unwrap();
        let l = &all[&socket_inode(&listener).unwrap()];
        assert!(l.is_listening());
        assert!(bound_to(l, &path), "{l:?}");
        let (ia, ib) = (socket_inode(&a).unwrap(), socket_inode(&b).unwrap());
        assert_eq!(all[&ia].peer, Some(ib));
        assert_eq!(all[&ib].peer, Some(ia));
        drop(b);
        let all = unix_sockets().unwrap();
        assert_eq!(all[&ia].peer, None, "a dangling end has no peer");
    }
}

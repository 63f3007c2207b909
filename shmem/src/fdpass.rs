//! Passing file descriptors over a Unix stream socket (`SCM_RIGHTS`), and
//! the sender's credentials with every request (`SCM_CREDENTIALS`).
//!
//! The local protocol carries the segment memfd (daemon to process) and
//! the process's userfaultfd (process to daemon) as `SCM_RIGHTS` with the
//! first byte of a frame. A process sends every byte of its requests with
//! its current pid and effective uid/gid ([`send_all_with_creds`]); the
//! kernel refuses credentials the process could not take itself, so the
//! daemon ([`set_passcred`], [`recv_with_fds_creds`]) checks each request
//! with the caller's credentials of the moment, not those it had when it
//! connected. These are the only `sendmsg`/`recvmsg` with control messages
//! in dipc; they work on any socket descriptor, blocking or not (a tokio
//! daemon calls them inside `try_io`).

use std::io::{self, IoSlice};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// Most descriptors accepted in one `recv_with_fds` (the protocol sends
/// one at a time; extra ones are closed).
pub const MAX_FDS: usize = 8;

/// Most buffers gathered by one send (a frame's head and payload).
const MAX_PARTS: usize = 8;

/// Room for a control message of `MAX_FDS` descriptors and one of
/// credentials, 8-byte aligned as `struct cmsghdr` requires.
#[repr(C, align(8))]
struct CmsgBuf([u8; 128]);

const _: () = {
    // CMSG_SPACE(MAX_FDS * 4) = 16 (header) + 32 (data), plus
    // CMSG_SPACE(sizeof(struct ucred)) = 16 + 16, on 64-bit Linux.
    assert!(16 + MAX_FDS * size_of::<RawFd>() + 16 + 16 <= 128);
};

/// The credentials a message came with (`struct ucred`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Creds {
    pub pid: i32,
    pub uid: u32,
    pub gid: u32,
}

/// Ask the kernel for the sender's credentials with every message read
/// from `sock` (`SO_PASSCRED`).
pub fn set_passcred(sock: BorrowedFd<'_>) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: `on` is a valid int for the duration of the call, and its
    // size is passed with it.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PASSCRED,
            &on as *const libc::c_int as *const libc::c_void,
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Send all of `data`, every `sendmsg` carrying this process's pid and
/// effective uid/gid as `SCM_CREDENTIALS` (the kernel checks them), `fds`
/// with the first byte.
pub fn send_all_with_creds(
    sock: BorrowedFd<'_>,
    data: &[u8],
    fds: &[BorrowedFd<'_>],
) -> io::Result<()> {
    send_all_parts_with_creds(sock, &[data], fds)
}

/// Send all of `parts`, one after the other, gathered by the kernel
/// (`MSG_NOSIGNAL`; no credentials, no descriptors: a TCP socket).
pub fn send_all_parts(sock: BorrowedFd<'_>, parts: &[&[u8]]) -> io::Result<()> {
    send_all(sock, parts, &[], None)
}

/// [`send_all_with_creds`] of `parts` one after the other, gathered by
/// the kernel (`sendmsg` with several `iovec`s: a frame's header and its
/// payload from their own memory).
pub fn send_all_parts_with_creds(
    sock: BorrowedFd<'_>,
    parts: &[&[u8]],
    fds: &[BorrowedFd<'_>],
) -> io::Result<()> {
    // SAFETY: these calls only read the calling process's ids.
    let creds = unsafe {
        Creds {
            pid: libc::getpid(),
            uid: libc::geteuid(),
            gid: libc::getegid(),
        }
    };
    send_all(sock, parts, fds, Some(creds))
}

fn send_all(
    sock: BorrowedFd<'_>,
    parts: &[&[u8]],
    fds: &[BorrowedFd<'_>],
    creds: Option<Creds>,
) -> io::Result<()> {
    let iov: Vec<libc::iovec> = parts.iter().map(|p| iovec(p.as_ptr(), p.len())).collect();
    // SAFETY: the iovecs describe `parts`, readable for the call.
    unsafe { send_all_raw(sock, iov, fds, creds) }
}

/// Send all the bytes `iov` describes, one after the other (one or more
/// `sendmsg`), with this process's pid and effective uid/gid as
/// `SCM_CREDENTIALS` if `creds`: for memory of a C caller, which the
/// kernel reads directly and reports as `EFAULT` where it cannot (the
/// bytes before a bad address may have been sent: the stream is then out
/// of step and must be closed).
///
/// # Safety
/// Every `iovec` must describe memory that is not freed during the call
/// (the kernel may read it; a bad address is an error, not a fault).
pub unsafe fn send_all_iov(
    sock: BorrowedFd<'_>,
    iov: &[libc::iovec],
    creds: bool,
) -> io::Result<()> {
    let creds = creds.then(|| {
        // SAFETY: these calls only read the calling process's ids.
        unsafe {
            Creds {
                pid: libc::getpid(),
                uid: libc::geteuid(),
                gid: libc::getegid(),
            }
        }
    });
    // SAFETY: passed on from the caller.
    unsafe { send_all_raw(sock, iov.to_vec(), &[], creds) }
}

fn iovec(p: *const u8, len: usize) -> libc::iovec {
    libc::iovec {
        iov_base: p as *mut libc::c_void,
        iov_len: len,
    }
}

/// # Safety
/// As [`send_all_iov`].
unsafe fn send_all_raw(
    sock: BorrowedFd<'_>,
    mut iov: Vec<libc::iovec>,
    fds: &[BorrowedFd<'_>],
    creds: Option<Creds>,
) -> io::Result<()> {
    let mut first = fds;
    let mut at = 0;
    advance_iov(&mut iov, &mut at, 0);
    while at < iov.len() {
        // SAFETY: the iovecs from `at` on describe the rest of the
        // caller's memory (see above).
        let n = unsafe { send_msg_raw(sock, &iov[at..], first, creds)? };
        first = &[];
        advance_iov(&mut iov, &mut at, n);
    }
    Ok(())
}

/// Mark `n` more bytes of `iov` done (sent or received): the iovecs from
/// `*at` on shrink from the front, and `*at` moves past those emptied and
/// any empty ones after them (`iov.len()` when all are done).
pub fn advance_iov(iov: &mut [libc::iovec], at: &mut usize, mut n: usize) {
    while let Some(v) = iov.get_mut(*at) {
        let step = n.min(v.iov_len);
        v.iov_base = v.iov_base.wrapping_byte_add(step);
        v.iov_len -= step;
        n -= step;
        if v.iov_len > 0 {
            break;
        }
        *at += 1;
    }
}

/// Send `data` with one `sendmsg` (`MSG_NOSIGNAL`), attaching `fds` as
/// `SCM_RIGHTS` when not empty. Returns the bytes sent, which may be fewer
/// than `data.len()` on a stream socket: send the rest without fds (they
/// travel with the first byte).
pub fn send_with_fds(
    sock: BorrowedFd<'_>,
    data: &[u8],
    fds: &[BorrowedFd<'_>],
) -> io::Result<usize> {
    send_msg(sock, &[IoSlice::new(data)], fds, None)
}

/// [`send_with_fds`] of `parts` one after the other (one `sendmsg`, the
/// kernel gathering them). Returns the bytes sent, possibly fewer than all.
pub fn send_parts_with_fds(
    sock: BorrowedFd<'_>,
    parts: &[IoSlice<'_>],
    fds: &[BorrowedFd<'_>],
) -> io::Result<usize> {
    send_msg(sock, parts, fds, None)
}

fn send_msg(
    sock: BorrowedFd<'_>,
    parts: &[IoSlice<'_>],
    fds: &[BorrowedFd<'_>],
    creds: Option<Creds>,
) -> io::Result<usize> {
    // SAFETY: `IoSlice` is ABI compatible with `struct iovec` on Unix, and
    // these describe the caller's buffers, alive for the call.
    unsafe {
        let iov = std::slice::from_raw_parts(parts.as_ptr().cast::<libc::iovec>(), parts.len());
        send_msg_raw(sock, iov, fds, creds)
    }
}

/// One `sendmsg` of the bytes `iov` describes.
///
/// # Safety
/// As [`send_all_iov`].
unsafe fn send_msg_raw(
    sock: BorrowedFd<'_>,
    iov: &[libc::iovec],
    fds: &[BorrowedFd<'_>],
    creds: Option<Creds>,
) -> io::Result<usize> {
    if fds.len() > MAX_FDS || iov.len() > MAX_PARTS {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    let mut cbuf = CmsgBuf([0; 128]);
    // SAFETY: an all-zero msghdr is a valid empty one.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    // The kernel only reads the iovecs.
    msg.msg_iov = iov.as_ptr() as *mut libc::iovec;
    msg.msg_iovlen = iov.len() as _;
    let rights = (fds.len() * size_of::<RawFd>()) as u32;
    let ucred = size_of::<libc::ucred>() as u32;
    // SAFETY: CMSG_SPACE is pure arithmetic.
    let space = unsafe {
        (if fds.is_empty() {
            0
        } else {
            libc::CMSG_SPACE(rights)
        }) + (if creds.is_some() {
            libc::CMSG_SPACE(ucred)
        } else {
            0
        })
    };
    if space > 0 {
        msg.msg_control = cbuf.0.as_mut_ptr() as *mut libc::c_void;
        msg.msg_controllen = space as _;
        // SAFETY: msg_control points to `space` (<= 128, checked above)
        // writable, aligned, zeroed bytes, so CMSG_FIRSTHDR and CMSG_NXTHDR
        // return valid header pointers inside `cbuf` for the (at most two)
        // control messages that fit, and CMSG_DATA has room for each
        // payload (`rights` bytes of descriptors, one `struct ucred`).
        unsafe {
            let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
            if !fds.is_empty() {
                (*cmsg).cmsg_level = libc::SOL_SOCKET;
                (*cmsg).cmsg_type = libc::SCM_RIGHTS;
                (*cmsg).cmsg_len = libc::CMSG_LEN(rights) as _;
                let data = libc::CMSG_DATA(cmsg) as *mut RawFd;
                for (i, fd) in fds.iter().enumerate() {
                    data.add(i).write_unaligned(fd.as_raw_fd());
                }
                cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
            }
            if let Some(c) = creds {
                (*cmsg).cmsg_level = libc::SOL_SOCKET;
                (*cmsg).cmsg_type = libc::SCM_CREDENTIALS;
                (*cmsg).cmsg_len = libc::CMSG_LEN(ucred) as _;
                let data = libc::CMSG_DATA(cmsg) as *mut libc::ucred;
                data.write_unaligned(libc::ucred {
                    pid: c.pid,
                    uid: c.uid,
                    gid: c.gid,
                });
            }
        }
    }
    loop {
        // SAFETY: `msg` points to `iov` (memory read only by the kernel,
        // which reports a bad address as an error) and to `cbuf`, all
        // alive for the call.
        let n = unsafe { libc::sendmsg(sock.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Receive into `buf` with one `recvmsg` (`MSG_CMSG_CLOEXEC`), appending
/// any descriptors that came with these bytes to `fds`. Returns the bytes
/// read (0 at end of stream). Fails with `EMSGSIZE` if descriptors were
/// lost because more than [`MAX_FDS`] came at once.
pub fn recv_with_fds(
    sock: BorrowedFd<'_>,
    buf: &mut [u8],
    fds: &mut Vec<OwnedFd>,
) -> io::Result<usize> {
    recv_with_fds_creds(sock, buf, fds).map(|(n, _)| n)
}

/// [`recv_with_fds`], also returning the sender's credentials that came
/// with these bytes (on a socket with [`set_passcred`]; the kernel never
/// joins bytes sent with different credentials in one read).
pub fn recv_with_fds_creds(
    sock: BorrowedFd<'_>,
    buf: &mut [u8],
    fds: &mut Vec<OwnedFd>,
) -> io::Result<(usize, Option<Creds>)> {
    // SAFETY: `buf` is writable memory of `buf.len()` bytes.
    unsafe { recv_raw(sock, &[iovec(buf.as_mut_ptr(), buf.len())], 0, fds) }
}

/// Receive into the memory `iov` describes, in order, with one `recvmsg`
/// (`MSG_DONTWAIT` if `dontwait`: `WouldBlock` when nothing is there
/// yet); descriptors that came along are closed. Returns the bytes read
/// (0 at the end of the stream). A bad address in `iov` is `EFAULT` (the
/// bytes before it were read; those after it are still in the socket).
///
/// # Safety
/// Every `iovec` must describe memory that may be written (uninitialised
/// memory may), not freed during the call.
pub unsafe fn recv_iov(
    sock: BorrowedFd<'_>,
    iov: &[libc::iovec],
    dontwait: bool,
) -> io::Result<usize> {
    let flags = if dontwait { libc::MSG_DONTWAIT } else { 0 };
    // SAFETY: passed on from the caller.
    unsafe { recv_raw(sock, iov, flags, &mut Vec::new()) }.map(|(n, _)| n)
}

/// [`recv_with_fds_creds`] of up to `max` bytes appended to `buf` (read
/// into its spare capacity: no zeroing, no copy through a bounce buffer).
pub fn recv_buf_with_fds_creds(
    sock: BorrowedFd<'_>,
    buf: &mut bytes::BytesMut,
    max: usize,
    fds: &mut Vec<OwnedFd>,
) -> io::Result<(usize, Option<Creds>)> {
    buf.reserve(max);
    let spare = buf.spare_capacity_mut();
    let len = spare.len().min(max);
    // SAFETY: the spare capacity is writable memory of at least `len`
    // bytes (uninitialised bytes may be written).
    let (n, creds) = unsafe { recv_raw(sock, &[iovec(spare.as_mut_ptr().cast(), len)], 0, fds)? };
    // SAFETY: the kernel initialised the first `n <= len` bytes of the
    // spare capacity.
    unsafe { buf.set_len(buf.len() + n) };
    Ok((n, creds))
}

/// # Safety
/// As [`recv_iov`].
unsafe fn recv_raw(
    sock: BorrowedFd<'_>,
    iov: &[libc::iovec],
    flags: libc::c_int,
    fds: &mut Vec<OwnedFd>,
) -> io::Result<(usize, Option<Creds>)> {
    let mut creds = None;
    let mut cbuf = CmsgBuf([0; 128]);
    // SAFETY: an all-zero msghdr is a valid empty one.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    // The kernel does not write the iovecs themselves.
    msg.msg_iov = iov.as_ptr() as *mut libc::iovec;
    msg.msg_iovlen = iov.len() as _;
    msg.msg_control = cbuf.0.as_mut_ptr() as *mut libc::c_void;
    msg.msg_controllen = cbuf.0.len() as _;
    let n = loop {
        // SAFETY: `msg` points to `iov` (writable memory by the caller's
        // contract) and `cbuf`, both alive for the call; the kernel writes
        // at most their lengths.
        let n =
            unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC | flags) };
        if n >= 0 {
            break n as usize;
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    };
    // SAFETY: after recvmsg, msg_control/msg_controllen describe the control
    // messages the kernel wrote into `cbuf`; CMSG_FIRSTHDR/CMSG_NXTHDR walk
    // them within those bounds, and each SCM_RIGHTS payload holds
    // (cmsg_len - CMSG_LEN(0)) / 4 descriptors newly installed for us; an
    // SCM_CREDENTIALS payload is one struct ucred.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let bytes = (*cmsg).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                let data = libc::CMSG_DATA(cmsg) as *const RawFd;
                for i in 0..bytes / size_of::<RawFd>() {
                    fds.push(OwnedFd::from_raw_fd(data.add(i).read_unaligned()));
                }
            } else if (*cmsg).cmsg_level == libc::SOL_SOCKET
                && (*cmsg).cmsg_type == libc::SCM_CREDENTIALS
                && (*cmsg).cmsg_len as usize
                    >= libc::CMSG_LEN(size_of::<libc::ucred>() as u32) as usize
            {
                let c = (libc::CMSG_DATA(cmsg) as *const libc::ucred).read_unaligned();
                creds = Some(Creds {
                    pid: c.pid,
                    uid: c.uid,
                    gid: c.gid,
                });
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    if msg.msg_flags & libc::MSG_CTRUNC != 0 {
        return Err(io::Error::from_raw_os_error(libc::EMSGSIZE));
    }
    Ok((n, creds))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixStream;

    #[test]
    fn advance_iov_consumes_across_iovecs_and_skips_empty_ones() {
        let (a, b) = ([0u8; 4], [0u8; 3]);
        let mut iov = [
            iovec(a.as_ptr(), 4),
            iovec(b.as_ptr(), 0),
            iovec(b.as_ptr(), 3),
        ];
        let mut at = 0;
        advance_iov(&mut iov, &mut at, 0);
        assert_eq!((at, iov[0].iov_len), (0, 4));
        advance_iov(&mut iov, &mut at, 5);
        // The first is done, the empty one skipped, one byte of the third.
        assert_eq!(at, 2);
        assert_eq!(iov[2].iov_len, 2);
        assert_eq!(iov[2].iov_base as usize, b.as_ptr() as usize + 1);
        advance_iov(&mut iov, &mut at, 2);
        assert_eq!(at, 3);
    }

    #[test]
    fn raw_iovecs_send_and_receive_in_parts() {
        let (x, y) = UnixStream::pair().expect("pair");
        let (head, text) = (*b"head", *b"text of the message");
        // SAFETY: both iovecs describe our own buffers.
        unsafe {
            send_all_iov(
                x.as_fd(),
                &[iovec(head.as_ptr(), 4), iovec(text.as_ptr(), text.len())],
                true,
            )
        }
        .expect("send");
        let (mut h, mut t) = ([0u8; 4], [0u8; 19]);
        let iov = [iovec(h.as_mut_ptr(), 4), iovec(t.as_mut_ptr(), 19)];
        // SAFETY: both iovecs describe our own writable buffers.
        let n = unsafe { recv_iov(y.as_fd(), &iov, true) }.expect("recv");
        assert_eq!((n, &h, &t), (23, &head, &text));
        // Nothing more: WouldBlock, not a wait.
        // SAFETY: as above.
        let e = unsafe { recv_iov(y.as_fd(), &iov, true) }.expect_err("empty");
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        // A bad address is EFAULT, not a fault.
        let bad = [iovec(std::ptr::null(), 4)];
        // SAFETY: the kernel reports the bad address.
        let e = unsafe { send_all_iov(x.as_fd(), &bad, false) }.expect_err("bad");
        assert_eq!(e.raw_os_error(), Some(libc::EFAULT));
    }

    #[test]
    fn fds_travel_with_the_first_byte() {
        let (a, b) = UnixStream::pair().expect("socketpair");
        let memfd = crate::Memfd::create("dipc-pass", 4096).expect("memfd");
        memfd.write_at(0, b"via fd").expect("write");
        let n = send_with_fds(a.as_fd(), b"hello", &[memfd.as_fd()]).expect("send");
        assert_eq!(n, 5);
        let mut buf = [0u8; 16];
        let mut fds = Vec::new();
        let n = recv_with_fds(b.as_fd(), &mut buf, &mut fds).expect("recv");
        assert_eq!(&buf[..n], b"hello");
        assert_eq!(fds.len(), 1);
        // The received descriptor is the same memfd.
        let mut f = std::fs::File::from(fds.pop().expect("fd"));
        let mut s = [0u8; 6];
        f.read_exact(&mut s).expect("read");
        assert_eq!(&s, b"via fd");
        // Without fds, and at end of stream.
        send_with_fds(a.as_fd(), b"x", &[]).expect("send");
        let n = recv_with_fds(b.as_fd(), &mut buf, &mut fds).expect("recv");
        assert_eq!((n, fds.len()), (1, 0));
        drop(a);
        assert_eq!(
            recv_with_fds(b.as_fd(), &mut buf, &mut fds).expect("eof"),
            0
        );
    }

    #[test]
    fn credentials_travel_with_every_message() {
        let (a, b) = UnixStream::pair().expect("socketpair");
        set_passcred(b.as_fd()).expect("SO_PASSCRED");
        let memfd = crate::Memfd::create("dipc-pass", 4096).expect("memfd");
        send_all_with_creds(a.as_fd(), b"request", &[memfd.as_fd()]).expect("send");
        let mut buf = [0u8; 16];
        let mut fds = Vec::new();
        let (n, creds) = recv_with_fds_creds(b.as_fd(), &mut buf, &mut fds).expect("recv");
        assert_eq!((&buf[..n], fds.len()), (&b"request"[..], 1));
        // SAFETY: these calls only read this process's ids.
        let me = unsafe {
            Creds {
                pid: libc::getpid(),
                uid: libc::geteuid(),
                gid: libc::getegid(),
            }
        };
        assert_eq!(creds, Some(me));
        // Bytes sent without explicit credentials carry the kernel's.
        send_with_fds(a.as_fd(), b"x", &[]).expect("send");
        let (_, creds) = recv_with_fds_creds(b.as_fd(), &mut buf, &mut fds).expect("recv");
        assert_eq!(creds.map(|c| c.pid), Some(me.pid));
    }

    #[test]
    fn too_many_fds_is_refused() {
        let (a, _b) = UnixStream::pair().expect("socketpair");
        let fds = vec![a.as_fd(); MAX_FDS + 1];
        assert!(send_with_fds(a.as_fd(), b"x", &fds).is_err());
    }
}

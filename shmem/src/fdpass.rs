//! Passing file descriptors over a Unix stream socket (`SCM_RIGHTS`).
//!
//! The local protocol carries the segment memfd (daemon to process) and
//! the process's userfaultfd (process to daemon) as `SCM_RIGHTS` with the
//! first byte of a frame. These two calls are the only `sendmsg`/`recvmsg`
//! with control messages in dipc; they work on any socket descriptor,
//! blocking or not (a tokio daemon calls them inside `try_io`).

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// Most descriptors accepted in one `recv_with_fds` (the protocol sends
/// one at a time; extra ones are closed).
pub const MAX_FDS: usize = 8;

/// Room for a control message of `MAX_FDS` descriptors, 8-byte aligned as
/// `struct cmsghdr` requires.
#[repr(C, align(8))]
struct CmsgBuf([u8; 64]);

const _: () = {
    // CMSG_SPACE(MAX_FDS * 4) = 16 (header) + 32 (data) on 64-bit Linux.
    assert!(16 + MAX_FDS * size_of::<RawFd>() <= 64);
};

/// Send `data` with one `sendmsg` (`MSG_NOSIGNAL`), attaching `fds` as
/// `SCM_RIGHTS` when not empty. Returns the bytes sent, which may be fewer
/// than `data.len()` on a stream socket: send the rest without fds (they
/// travel with the first byte).
pub fn send_with_fds(
    sock: BorrowedFd<'_>,
    data: &[u8],
    fds: &[BorrowedFd<'_>],
) -> io::Result<usize> {
    if fds.len() > MAX_FDS {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    let mut cbuf = CmsgBuf([0; 64]);
    // SAFETY: an all-zero msghdr is a valid empty one.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if !fds.is_empty() {
        let payload = (fds.len() * size_of::<RawFd>()) as u32;
        // SAFETY: CMSG_SPACE/CMSG_LEN are pure arithmetic.
        let (space, len) = unsafe { (libc::CMSG_SPACE(payload), libc::CMSG_LEN(payload)) };
        msg.msg_control = cbuf.0.as_mut_ptr() as *mut libc::c_void;
        msg.msg_controllen = space as _;
        // SAFETY: msg_control points to `space` (<= 64, checked above)
        // writable, aligned bytes, so CMSG_FIRSTHDR returns a valid header
        // pointer inside `cbuf`, and CMSG_DATA has room for `payload` bytes.
        unsafe {
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = len as _;
            let data = libc::CMSG_DATA(cmsg) as *mut RawFd;
            for (i, fd) in fds.iter().enumerate() {
                data.add(i).write_unaligned(fd.as_raw_fd());
            }
        }
    }
    loop {
        // SAFETY: `msg` points to `iov` (our `data`, read only by the kernel)
        // and to `cbuf`, both alive for the call.
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
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr() as *mut libc::c_void,
        iov_len: buf.len(),
    };
    let mut cbuf = CmsgBuf([0; 64]);
    // SAFETY: an all-zero msghdr is a valid empty one.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.0.as_mut_ptr() as *mut libc::c_void;
    msg.msg_controllen = cbuf.0.len() as _;
    let n = loop {
        // SAFETY: `msg` points to `iov` (our writable `buf`) and `cbuf`, both
        // alive for the call; the kernel writes at most their lengths.
        let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
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
    // (cmsg_len - CMSG_LEN(0)) / 4 descriptors newly installed for us.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let bytes = (*cmsg).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                let data = libc::CMSG_DATA(cmsg) as *const RawFd;
                for i in 0..bytes / size_of::<RawFd>() {
                    fds.push(OwnedFd::from_raw_fd(data.add(i).read_unaligned()));
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    if msg.msg_flags & libc::MSG_CTRUNC != 0 {
        return Err(io::Error::from_raw_os_error(libc::EMSGSIZE));
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixStream;

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
    fn too_many_fds_is_refused() {
        let (a, _b) = UnixStream::pair().expect("socketpair");
        let fds = vec![a.as_fd(); MAX_FDS + 1];
        assert!(send_with_fds(a.as_fd(), b"x", &fds).is_err());
    }
}

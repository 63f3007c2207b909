//! The node's copy of a segment: an owned memfd and the daemon's view.
//!
//! The daemon fills pages through its own view (not registered with any
//! userfaultfd, so its accesses never fault to itself) and then resolves a
//! process's minor fault with `UFFDIO_CONTINUE`; it invalidates a page for
//! every local process at once by punching a hole in the memfd.
//!
//! Reads go through `pread` rather than the view: reading a hole through a
//! shared mapping would allocate a zero page in the memfd, turning the
//! next fault of a process from "missing" into "minor" and making the page
//! look present to [`Memfd::is_resident`]. `pread` of a hole returns zeros
//! and allocates nothing.

use std::ffi::CString;
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::fs::FileExt;

use crate::mapping::{Mapping, Placement, Protection};
use crate::{Error, last_os_error, page_size};

/// An owned memfd plus this process's own (unregistered) `MAP_SHARED` view.
#[derive(Debug)]
pub struct Memfd {
    file: File,
    size: u64,
    /// `None` for a memfd of size 0.
    view: Option<Mapping>,
}

impl Memfd {
    /// Create a memfd of `size` bytes (`MFD_CLOEXEC`; the name shows in
    /// `/proc/<pid>/maps` and `/proc/<pid>/fd`) and map it.
    pub fn create(name: &str, size: u64) -> Result<Memfd, Error> {
        let cname = CString::new(name).map_err(|_| Error::MemfdCreate {
            name: name.to_owned(),
            source: std::io::Error::from_raw_os_error(libc::EINVAL),
        })?;
        // SAFETY: `cname` is a valid NUL-terminated string.
        let fd = unsafe { libc::memfd_create(cname.as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return Err(Error::MemfdCreate {
                name: name.to_owned(),
                source: last_os_error(),
            });
        }
        // SAFETY: `fd` was just created and is owned by nobody else.
        let file = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
        file.set_len(size)
            .map_err(|source| Error::Truncate { size, source })?;
        let view = if size == 0 {
            None
        } else {
            Some(Mapping::map(
                file.as_fd(),
                size,
                Placement::Anywhere,
                Protection::READ_WRITE,
            )?)
        };
        Ok(Memfd { file, size, view })
    }

    /// Size in bytes (as created; the view is rounded up to pages).
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The memfd, to send to a process (`SCM_RIGHTS`).
    pub fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }

    fn check(&self, off: u64, len: usize) -> Result<(), Error> {
        match off.checked_add(len as u64) {
            Some(end) if end <= self.size => Ok(()),
            _ => Err(Error::OutOfBounds {
                off,
                len: len as u64,
                size: self.size,
            }),
        }
    }

    /// Copy `buf.len()` bytes at `off` out of the memfd. A hole reads as
    /// zeros and stays a hole.
    pub fn read_at(&self, off: u64, buf: &mut [u8]) -> Result<(), Error> {
        self.check(off, buf.len())?;
        self.file
            .read_exact_at(buf, off)
            .map_err(|source| Error::Io {
                op: "pread from memfd",
                source,
            })
    }

    /// Copy `data` into the memfd at `off` through the view (allocating
    /// the pages it touches).
    pub fn write_at(&self, off: u64, data: &[u8]) -> Result<(), Error> {
        self.check(off, data.len())?;
        match &self.view {
            Some(view) => view.write_at(off, data),
            // Size 0: only an empty write passes the bounds check.
            None => Ok(()),
        }
    }

    /// Drop the pages of `[off, off + len)` from the memfd and from every
    /// mapping of it in every process (`fallocate(PUNCH_HOLE|KEEP_SIZE)`).
    /// Whole pages only are freed; partial pages at the ends are zeroed.
    pub fn punch_hole(&self, off: u64, len: u64) -> Result<(), Error> {
        let bad = || Error::OutOfBounds {
            off,
            len,
            size: self.size,
        };
        let end = off.checked_add(len).ok_or_else(bad)?;
        if end > self.size || end > i64::MAX as u64 {
            return Err(bad());
        }
        if len == 0 {
            return Ok(());
        }
        // SAFETY: fallocate on a file descriptor we own; it changes file
        // contents only, no memory of this process is reinterpreted.
        let rc = unsafe {
            libc::fallocate(
                self.file.as_raw_fd(),
                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                off as libc::off_t,
                len as libc::off_t,
            )
        };
        if rc != 0 {
            return Err(Error::Io {
                op: "fallocate(PUNCH_HOLE) on memfd",
                source: last_os_error(),
            });
        }
        Ok(())
    }

    /// Is the page containing `off` present in the memfd
    /// (`lseek(SEEK_DATA)`)? False for a hole or an offset past the end.
    pub fn is_resident(&self, off: u64) -> bool {
        if off >= self.size {
            return false;
        }
        let page = off & !(page_size() - 1);
        // SAFETY: lseek on a file descriptor we own; no memory is touched.
        // It moves the file offset, which nothing here relies on (reads and
        // writes are positional).
        let r = unsafe { libc::lseek(self.file.as_raw_fd(), page as libc::off_t, libc::SEEK_DATA) };
        r >= 0 && (r as u64) < page + page_size()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_read_punch() {
        let m = Memfd::create("dipc-test", 3 * 4096 + 100).expect("memfd");
        assert_eq!(m.size(), 3 * 4096 + 100);
        assert!(!m.is_resident(0));
        m.write_at(4096 + 10, b"hello").expect("write");
        let mut buf = [0u8; 5];
        m.read_at(4096 + 10, &mut buf).expect("read");
        assert_eq!(&buf, b"hello");
        assert!(m.is_resident(4096));
        assert!(!m.is_resident(0));
        // Reading a hole gives zeros and leaves it a hole.
        let mut z = [1u8; 16];
        m.read_at(2 * 4096, &mut z).expect("read hole");
        assert_eq!(z, [0u8; 16]);
        assert!(!m.is_resident(2 * 4096));
        m.punch_hole(4096, 4096).expect("punch");
        assert!(!m.is_resident(4096));
        m.read_at(4096 + 10, &mut buf).expect("read");
        assert_eq!(buf, [0u8; 5]);
    }

    #[test]
    fn bounds_are_checked() {
        let m = Memfd::create("dipc-test", 4096).expect("memfd");
        let mut buf = [0u8; 2];
        assert!(matches!(
            m.read_at(4095, &mut buf),
            Err(Error::OutOfBounds { .. })
        ));
        assert!(matches!(
            m.write_at(u64::MAX, b"x"),
            Err(Error::OutOfBounds { .. })
        ));
        assert!(matches!(
            m.punch_hole(4096, 1),
            Err(Error::OutOfBounds { .. })
        ));
        assert!(m.write_at(4095, b"x").is_ok());
        assert!(!m.is_resident(4096));
        assert_eq!(
            m.read_at(4096, &mut buf).map_err(|e| e.errno()).err(),
            Some(Some(libc::EINVAL))
        );
    }

    #[test]
    fn empty_memfd() {
        let m = Memfd::create("dipc-empty", 0).expect("memfd");
        assert_eq!(m.size(), 0);
        assert!(m.write_at(0, b"").is_ok());
        assert!(m.write_at(0, b"x").is_err());
    }

    #[test]
    fn bad_name_is_an_error() {
        assert!(matches!(
            Memfd::create("a\0b", 4096),
            Err(Error::MemfdCreate { .. })
        ));
    }
}

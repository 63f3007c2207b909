//! The verbs FFI, and the only module of this crate with `unsafe` code.
//!
//! Everything here wraps one libibverbs object in an owning Rust type whose
//! `Drop` releases it, and whose methods check what the C API leaves to the
//! caller (lengths against registered regions, return codes and `errno`).
//! Parents are kept alive by `Arc`s held by their children (a QP holds its
//! CQ and PD, a region its PD, a PD its device context), so the destruction
//! order libibverbs requires follows from Rust's ownership.
//!
//! Registered memory is always memory this module allocated itself
//! ([`Region`]): page-aligned, zeroed, owned for as long as the registration
//! lives. No caller memory is ever registered, in particular never the memfd
//! pages of a shared segment, which invalidation punches out (DESIGN.md's
//! pinning trap: the registration would keep pointing at a detached page).
//! Data moves in and out of regions by copying ([`Region::write`],
//! [`Region::read`]); no reference into memory the adapter may write to
//! escapes this module.
//!
//! The verbs objects are thread-safe (rdma-core documents every verb as
//! callable from any thread), which is why the wrappers are `Send`/`Sync`;
//! the connection engine uses each from one thread anyway.

use std::alloc::Layout;
use std::ffi::CStr;
use std::io;
use std::os::fd::{BorrowedFd, RawFd};
use std::ptr;
use std::sync::Arc;

use rdma_sys as sys;

use crate::Error;

fn last_os_error(what: impl Into<String>) -> Error {
    Error::verbs(what, io::Error::last_os_error())
}

/// A verb that returns an errno-style code (0 on success, else a positive
/// errno, or -1 with `errno` set).
fn check(rc: i32, what: impl Into<String>) -> Result<(), Error> {
    match rc {
        0 => Ok(()),
        -1 => Err(last_os_error(what)),
        e => Err(Error::verbs(what, io::Error::from_raw_os_error(e.abs()))),
    }
}

/// One port of a device, as `ibv_query_port` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortInfo {
    /// Port number (from 1).
    pub port: u8,
    /// The port is ACTIVE (usable for traffic).
    pub active: bool,
    /// The active MTU as an `ibv_mtu` value (1 = 256 ... 5 = 4096).
    pub active_mtu: u32,
    /// The port's LID (0 on RoCE, where addressing is by GID).
    pub lid: u16,
    /// Number of entries in the port's GID table.
    pub gid_table_len: i32,
}

/// A device and its ports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceInfo {
    pub name: String,
    pub ports: Vec<PortInfo>,
}

/// The RDMA devices of this machine (an empty list when there are none or
/// libibverbs finds no provider).
pub fn devices() -> Result<Vec<DeviceInfo>, Error> {
    let mut out = Vec::new();
    for name in device_names()? {
        let ctx = Context::open(&name)?;
        let mut ports = Vec::new();
        for port in 1..=ctx.port_count()? {
            ports.push(ctx.port(port)?);
        }
        out.push(DeviceInfo { name, ports });
    }
    Ok(out)
}

fn device_names() -> Result<Vec<String>, Error> {
    let mut n = 0i32;
    // SAFETY: `n` is a valid out-pointer; the returned list is freed below.
    let list = unsafe { sys::ibv_get_device_list(&mut n) };
    if list.is_null() {
        // ENOSYS: no kernel support at all; treat as "no devices".
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ENOSYS) {
            return Ok(Vec::new());
        }
        return Err(Error::verbs("ibv_get_device_list", e));
    }
    let mut names = Vec::new();
    for i in 0..usize::try_from(n).unwrap_or(0) {
        // SAFETY: the list holds `n` valid device pointers.
        let dev = unsafe { *list.add(i) };
        if dev.is_null() {
            break;
        }
        // SAFETY: `dev` is a valid device; the name is a NUL-terminated
        // string inside it, copied before the list is freed.
        let name = unsafe { CStr::from_ptr(sys::ibv_get_device_name(dev)) };
        names.push(name.to_string_lossy().into_owned());
    }
    // SAFETY: `list` came from ibv_get_device_list and is freed once.
    unsafe { sys::ibv_free_device_list(list) };
    Ok(names)
}

/// An open device (`ibv_context`).
#[derive(Debug)]
pub struct Context {
    ctx: *mut sys::ibv_context,
    name: String,
}

// SAFETY: libibverbs contexts may be used from any thread.
unsafe impl Send for Context {}
// SAFETY: as above; every verb on a context is thread-safe.
unsafe impl Sync for Context {}

impl Context {
    /// Open the device called `name`.
    pub fn open(name: &str) -> Result<Arc<Context>, Error> {
        let mut n = 0i32;
        // SAFETY: `n` is a valid out-pointer; the list is freed below.
        let list = unsafe { sys::ibv_get_device_list(&mut n) };
        if list.is_null() {
            return Err(last_os_error("ibv_get_device_list"));
        }
        let mut ctx = ptr::null_mut();
        for i in 0..usize::try_from(n).unwrap_or(0) {
            // SAFETY: the list holds `n` valid device pointers.
            let dev = unsafe { *list.add(i) };
            if dev.is_null() {
                break;
            }
            // SAFETY: `dev` is valid while the list is.
            let dev_name = unsafe { CStr::from_ptr(sys::ibv_get_device_name(dev)) };
            if dev_name.to_bytes() == name.as_bytes() {
                // SAFETY: `dev` is valid; the context outlives the list by
                // design of libibverbs (devices are reference counted).
                ctx = unsafe { sys::ibv_open_device(dev) };
                if ctx.is_null() {
                    let e = last_os_error(format!("open RDMA device {name}"));
                    // SAFETY: freed once, after its last use.
                    unsafe { sys::ibv_free_device_list(list) };
                    return Err(e);
                }
                break;
            }
        }
        // SAFETY: freed once, after its last use.
        unsafe { sys::ibv_free_device_list(list) };
        if ctx.is_null() {
            return Err(Error::NoDevice {
                reason: format!("no RDMA device called {name:?}"),
            });
        }
        Ok(Arc::new(Context {
            ctx,
            name: name.to_string(),
        }))
    }

    fn port_count(&self) -> Result<u8, Error> {
        // SAFETY: all-zero is a valid value of this plain C struct.
        let mut attr: sys::ibv_device_attr = unsafe { std::mem::zeroed() };
        // SAFETY: `self.ctx` is open; `attr` is a valid out-pointer.
        let rc = unsafe { sys::ibv_query_device(self.ctx, &mut attr) };
        check(rc, format!("query device {}", self.name))?;
        Ok(attr.phys_port_cnt)
    }

    /// Query one port.
    pub fn port(&self, port: u8) -> Result<PortInfo, Error> {
        // SAFETY: all-zero is a valid value of this plain C struct.
        let mut attr: sys::ibv_port_attr = unsafe { std::mem::zeroed() };
        // SAFETY: `self.ctx` is open; `attr` is a valid out-pointer of the
        // size the wrapper passes to the provider.
        let rc = unsafe { sys::___ibv_query_port(self.ctx, port, &mut attr) };
        check(rc, format!("query port {} of {}", port, self.name))?;
        Ok(PortInfo {
            port,
            active: attr.state == sys::ibv_port_state::IBV_PORT_ACTIVE,
            active_mtu: attr.active_mtu,
            lid: attr.lid,
            gid_table_len: attr.gid_tbl_len,
        })
    }

    /// The GID at `index` of `port`'s table.
    pub fn gid(&self, port: u8, index: u8) -> Result<[u8; 16], Error> {
        let mut gid = sys::ibv_gid { raw: [0; 16] };
        // SAFETY: `self.ctx` is open; `gid` is a valid out-pointer.
        let rc = unsafe { sys::ibv_query_gid(self.ctx, port, i32::from(index), &mut gid) };
        check(
            rc,
            format!("query GID {index} of port {port} of {}", self.name),
        )?;
        // SAFETY: every bit pattern is a valid `[u8; 16]`.
        Ok(unsafe { gid.raw })
    }
}

impl Drop for Context {
    fn drop(&mut self) {
        // SAFETY: every child object holds an `Arc<Context>`, so none is
        // left when this runs; the context is closed once.
        unsafe { sys::ibv_close_device(self.ctx) };
    }
}

/// A protection domain.
#[derive(Debug)]
pub struct Pd {
    pd: *mut sys::ibv_pd,
    ctx: Arc<Context>,
}

// SAFETY: protection domains may be used from any thread.
unsafe impl Send for Pd {}
// SAFETY: as above.
unsafe impl Sync for Pd {}

impl Pd {
    pub fn new(ctx: &Arc<Context>) -> Result<Arc<Pd>, Error> {
        // SAFETY: `ctx.ctx` is open.
        let pd = unsafe { sys::ibv_alloc_pd(ctx.ctx) };
        if pd.is_null() {
            return Err(last_os_error(format!(
                "allocate protection domain on {}",
                ctx.name
            )));
        }
        Ok(Arc::new(Pd {
            pd,
            ctx: ctx.clone(),
        }))
    }
}

impl Drop for Pd {
    fn drop(&mut self) {
        // SAFETY: regions and QPs hold an `Arc<Pd>`, so none is left.
        unsafe { sys::ibv_dealloc_pd(self.pd) };
    }
}

/// Page-aligned, zeroed memory owned by this type and registered with a
/// protection domain for local access and remote writes.
#[derive(Debug)]
pub struct Region {
    ptr: *mut u8,
    layout: Layout,
    mr: *mut sys::ibv_mr,
    _pd: Arc<Pd>,
}

// SAFETY: the region owns its memory and registration; access goes through
// `&self`/`&mut self` methods that copy with bounds checks.
unsafe impl Send for Region {}

impl Region {
    /// Allocate and register `len` bytes (rounded up to whole pages).
    /// `remote_write` lets the peer RDMA WRITE into it.
    pub fn new(pd: &Arc<Pd>, len: usize, remote_write: bool) -> Result<Region, Error> {
        let len = len.max(1).div_ceil(4096) * 4096;
        let layout = Layout::from_size_align(len, 4096).map_err(|e| Error::Config {
            reason: format!("registered buffer of {len} bytes: {e}"),
        })?;
        // SAFETY: the layout has a non-zero size.
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        if ptr.is_null() {
            return Err(Error::verbs(
                format!("allocate {len} bytes for a registered buffer"),
                io::Error::from(io::ErrorKind::OutOfMemory),
            ));
        }
        let mut access = sys::ibv_access_flags::IBV_ACCESS_LOCAL_WRITE.0;
        if remote_write {
            access |= sys::ibv_access_flags::IBV_ACCESS_REMOTE_WRITE.0;
        }
        // SAFETY: `ptr..ptr+len` is memory we own until `Drop`, which
        // deregisters before freeing it.
        let mr = unsafe { sys::ibv_reg_mr(pd.pd, ptr.cast(), len, access as i32) };
        if mr.is_null() {
            let e = last_os_error(format!(
                "register {len} bytes with {} (is RLIMIT_MEMLOCK too low?)",
                pd.ctx.name
            ));
            // SAFETY: allocated above with this layout, not registered.
            unsafe { std::alloc::dealloc(ptr, layout) };
            return Err(e);
        }
        Ok(Region {
            ptr,
            layout,
            mr,
            _pd: pd.clone(),
        })
    }

    fn len(&self) -> usize {
        self.layout.size()
    }

    /// The address the adapter (and the peer, for RDMA WRITE) uses.
    pub fn addr(&self) -> u64 {
        self.ptr as u64
    }

    pub fn lkey(&self) -> u32 {
        // SAFETY: `mr` is valid while `self` is.
        unsafe { (*self.mr).lkey }
    }

    pub fn rkey(&self) -> u32 {
        // SAFETY: `mr` is valid while `self` is.
        unsafe { (*self.mr).rkey }
    }

    fn range(&self, off: usize, len: usize) -> Result<(), Error> {
        match off.checked_add(len) {
            Some(end) if end <= self.len() => Ok(()),
            _ => Err(Error::Protocol {
                peer: String::new(),
                reason: format!(
                    "{len} bytes at offset {off} exceed a registered buffer of {} bytes",
                    self.len()
                ),
            }),
        }
    }

    /// Copy `src` into the region at `off`.
    pub fn write(&mut self, off: usize, src: &[u8]) -> Result<(), Error> {
        self.range(off, src.len())?;
        // SAFETY: the range is inside our allocation (checked above), and
        // `src` cannot overlap memory we own exclusively.
        unsafe { ptr::copy_nonoverlapping(src.as_ptr(), self.ptr.add(off), src.len()) };
        Ok(())
    }

    /// Read the little-endian `u32` at `off` (4-byte aligned), which the
    /// peer may overwrite by RDMA WRITE at any time: a volatile read, so
    /// that every call looks at memory again.
    pub fn read_u32(&self, off: usize) -> Result<u32, Error> {
        self.range(off, 4)?;
        if !off.is_multiple_of(4) {
            return Err(Error::Config {
                reason: format!("unaligned ack word at offset {off}"),
            });
        }
        // SAFETY: in bounds (checked above) and aligned (the allocation is
        // page-aligned and `off` a multiple of 4); any bit pattern is a
        // valid u32.
        let v = unsafe { ptr::read_volatile(self.ptr.add(off).cast::<u32>()) };
        Ok(u32::from_le(v))
    }

    /// Copy `dst.len()` bytes at `off` out of the region.
    pub fn read(&self, off: usize, dst: &mut [u8]) -> Result<(), Error> {
        self.range(off, dst.len())?;
        // SAFETY: the range is inside our allocation (checked above). The
        // caller reads a slot only after the completion that says the
        // adapter finished writing it.
        unsafe { ptr::copy_nonoverlapping(self.ptr.add(off), dst.as_mut_ptr(), dst.len()) };
        Ok(())
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: `mr` was registered by `new` and is deregistered once;
        // the memory is freed only after that, with its own layout.
        unsafe {
            sys::ibv_dereg_mr(self.mr);
            std::alloc::dealloc(self.ptr, self.layout);
        }
    }
}

/// A completion queue with its own completion channel (the file descriptor
/// a thread sleeps on when polling found nothing).
#[derive(Debug)]
pub struct Cq {
    cq: *mut sys::ibv_cq,
    channel: *mut sys::ibv_comp_channel,
    /// Events taken from the channel and not yet acknowledged.
    unacked: u32,
    _ctx: Arc<Context>,
}

// SAFETY: CQs and channels may be used from any thread; `&mut self`
// methods serialise polling.
unsafe impl Send for Cq {}

/// One work completion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Completion {
    pub wr_id: u64,
    /// `ibv_wc_status` (0 = success).
    pub status: u32,
    /// `ibv_wc_opcode`.
    pub opcode: u32,
    pub byte_len: u32,
    /// Immediate data (host order) when the completion carries one.
    pub imm: Option<u32>,
}

/// `ibv_wc_opcode` values the engine distinguishes.
pub const WC_SEND: u32 = sys::ibv_wc_opcode::IBV_WC_SEND;
pub const WC_RDMA_WRITE: u32 = sys::ibv_wc_opcode::IBV_WC_RDMA_WRITE;
pub const WC_RECV: u32 = sys::ibv_wc_opcode::IBV_WC_RECV;
pub const WC_RECV_RDMA_WITH_IMM: u32 = sys::ibv_wc_opcode::IBV_WC_RECV_RDMA_WITH_IMM;

/// The text libibverbs gives a completion status.
pub fn status_str(status: u32) -> String {
    // SAFETY: ibv_wc_status_str returns a static string for any value
    // (unknown ones included).
    let s = unsafe { CStr::from_ptr(sys::ibv_wc_status_str(status)) };
    s.to_string_lossy().into_owned()
}

impl Cq {
    /// A CQ of at least `entries` entries with a non-blocking channel.
    pub fn new(ctx: &Arc<Context>, entries: i32) -> Result<Cq, Error> {
        // SAFETY: `ctx.ctx` is open.
        let channel = unsafe { sys::ibv_create_comp_channel(ctx.ctx) };
        if channel.is_null() {
            return Err(last_os_error("create completion channel"));
        }
        // SAFETY: `channel` is valid; the CQ is destroyed before it.
        let cq = unsafe { sys::ibv_create_cq(ctx.ctx, entries, ptr::null_mut(), channel, 0) };
        if cq.is_null() {
            let e = last_os_error(format!("create completion queue of {entries} entries"));
            // SAFETY: created above, no CQ uses it.
            unsafe { sys::ibv_destroy_comp_channel(channel) };
            return Err(e);
        }
        let this = Cq {
            cq,
            channel,
            unacked: 0,
            _ctx: ctx.clone(),
        };
        let fd = this.raw_fd();
        // SAFETY: `fd` is the channel's open descriptor; F_GETFL/F_SETFL
        // only change its flags.
        let rc = unsafe {
            let fl = libc::fcntl(fd, libc::F_GETFL);
            if fl < 0 {
                fl
            } else {
                libc::fcntl(fd, libc::F_SETFL, fl | libc::O_NONBLOCK)
            }
        };
        if rc < 0 {
            return Err(last_os_error("make the completion channel non-blocking"));
        }
        Ok(this)
    }

    fn raw_fd(&self) -> RawFd {
        // SAFETY: `channel` is valid while `self` is.
        unsafe { (*self.channel).fd }
    }

    /// The channel's file descriptor: readable when an armed CQ got a
    /// completion.
    pub fn fd(&self) -> BorrowedFd<'_> {
        // SAFETY: the channel's descriptor stays open until `Drop`
        // destroys the channel, and the borrow cannot outlive `self`.
        unsafe { BorrowedFd::borrow_raw(self.raw_fd()) }
    }

    /// Ask for an event on the channel at the next completion.
    pub fn arm(&mut self) -> Result<(), Error> {
        // SAFETY: `cq` is valid.
        let rc = unsafe { sys::ibv_req_notify_cq(self.cq, 0) };
        check(rc, "arm the completion queue")
    }

    /// Consume a pending channel event, if any (non-blocking). Events are
    /// acknowledged in batches (acknowledging takes a lock in libibverbs).
    pub fn take_event(&mut self) -> Result<bool, Error> {
        let mut cq = ptr::null_mut();
        let mut cq_ctx = ptr::null_mut();
        // SAFETY: `channel` is valid and non-blocking; out-pointers valid.
        let rc = unsafe { sys::ibv_get_cq_event(self.channel, &mut cq, &mut cq_ctx) };
        if rc != 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::WouldBlock {
                return Ok(false);
            }
            return Err(Error::verbs("read the completion channel", e));
        }
        self.unacked += 1;
        if self.unacked >= 64 {
            self.ack();
        }
        Ok(true)
    }

    fn ack(&mut self) {
        if self.unacked > 0 {
            // SAFETY: `cq` is valid; we took exactly `unacked` events.
            unsafe { sys::ibv_ack_cq_events(self.cq, self.unacked) };
            self.unacked = 0;
        }
    }

    /// Poll up to `out.len()` completions; returns how many were written.
    pub fn poll(&mut self, out: &mut Vec<Completion>, max: usize) -> Result<usize, Error> {
        const BATCH: usize = 32;
        // SAFETY: all-zero is a valid value of this plain C struct.
        let mut wc: [sys::ibv_wc; BATCH] = unsafe { std::mem::zeroed() };
        let want = max.min(BATCH) as i32;
        // SAFETY: `cq` is valid; `wc` has room for `want` entries.
        let n = unsafe { sys::ibv_poll_cq(self.cq, want, wc.as_mut_ptr()) };
        if n < 0 {
            return Err(Error::verbs(
                "poll the completion queue",
                io::Error::from_raw_os_error(n.abs()),
            ));
        }
        for w in &wc[..n as usize] {
            let imm = if w.wc_flags & sys::ibv_wc_flags::IBV_WC_WITH_IMM.0 != 0 {
                // SAFETY: with IBV_WC_WITH_IMM the union holds imm_data.
                Some(u32::from_be(unsafe {
                    w.imm_data_invalidated_rkey_union.imm_data
                }))
            } else {
                None
            };
            out.push(Completion {
                wr_id: w.wr_id,
                status: w.status,
                opcode: w.opcode,
                byte_len: w.byte_len,
                imm,
            });
        }
        Ok(n as usize)
    }
}

impl Drop for Cq {
    fn drop(&mut self) {
        self.ack();
        // SAFETY: QPs using this CQ hold it (the engine drops the QP
        // first); all events were acknowledged above; destroyed once, CQ
        // before its channel.
        unsafe {
            sys::ibv_destroy_cq(self.cq);
            sys::ibv_destroy_comp_channel(self.channel);
        }
    }
}

/// The layout of `struct ibv_global_route` in `<infiniband/verbs.h>`;
/// rdma-sys declares `hop_limit` and `traffic_class` as one `u16`, so we
/// write the route through this struct instead.
#[repr(C)]
struct GlobalRoute {
    dgid: [u8; 16],
    flow_label: u32,
    sgid_index: u8,
    hop_limit: u8,
    traffic_class: u8,
}

const _: () =
    assert!(std::mem::size_of::<GlobalRoute>() == std::mem::size_of::<sys::ibv_global_route>());

/// Where the peer's QP is (what [`crate::proto::ConnData`] carries).
#[derive(Debug, Clone, Copy)]
pub struct RemoteQp {
    pub qpn: u32,
    pub psn: u32,
    pub lid: u16,
    pub gid: [u8; 16],
}

/// Tunables of an RC queue pair's path.
#[derive(Debug, Clone, Copy)]
pub struct PathParams {
    pub port: u8,
    pub gid_index: u8,
    /// `ibv_mtu` value.
    pub mtu: u32,
    /// Local ACK timeout exponent (4.096 us * 2^timeout).
    pub timeout: u8,
    /// Transport retries before `IBV_WC_RETRY_EXC_ERR`.
    pub retry_cnt: u8,
}

/// A reliable-connected queue pair using one CQ for sends and receives.
#[derive(Debug)]
pub struct Qp {
    qp: *mut sys::ibv_qp,
    _pd: Arc<Pd>,
}

// SAFETY: QPs may be used from any thread; posting goes through `&mut`.
unsafe impl Send for Qp {}

impl Qp {
    /// Create an RC QP (state RESET) with room for `send_wr`/`recv_wr`
    /// outstanding requests.
    pub fn new(pd: &Arc<Pd>, cq: &Cq, send_wr: u32, recv_wr: u32) -> Result<Qp, Error> {
        // SAFETY: all-zero is a valid value of this plain C struct.
        let mut init: sys::ibv_qp_init_attr = unsafe { std::mem::zeroed() };
        init.send_cq = cq.cq;
        init.recv_cq = cq.cq;
        init.qp_type = sys::ibv_qp_type::IBV_QPT_RC;
        init.cap.max_send_wr = send_wr;
        init.cap.max_recv_wr = recv_wr;
        init.cap.max_send_sge = 1;
        init.cap.max_recv_sge = 1;
        // SAFETY: `pd` and `cq` are valid; `init` is filled in.
        let qp = unsafe { sys::ibv_create_qp(pd.pd, &mut init) };
        if qp.is_null() {
            return Err(last_os_error("create RC queue pair"));
        }
        Ok(Qp {
            qp,
            _pd: pd.clone(),
        })
    }

    pub fn qpn(&self) -> u32 {
        // SAFETY: `qp` is valid while `self` is.
        unsafe { (*self.qp).qp_num }
    }

    fn modify(&mut self, attr: &mut sys::ibv_qp_attr, mask: u32, what: &str) -> Result<(), Error> {
        // SAFETY: `qp` is valid; `attr` is filled in for every bit of mask.
        let rc = unsafe { sys::ibv_modify_qp(self.qp, attr, mask as i32) };
        check(rc, format!("move queue pair to {what}"))
    }

    /// RESET -> INIT, allowing remote writes into our regions.
    pub fn modify_to_init(&mut self, port: u8) -> Result<(), Error> {
        use sys::ibv_qp_attr_mask as m;
        // SAFETY: all-zero is a valid value of this plain C struct.
        let mut a: sys::ibv_qp_attr = unsafe { std::mem::zeroed() };
        a.qp_state = sys::ibv_qp_state::IBV_QPS_INIT;
        a.pkey_index = 0;
        a.port_num = port;
        a.qp_access_flags = sys::ibv_access_flags::IBV_ACCESS_REMOTE_WRITE.0
            | sys::ibv_access_flags::IBV_ACCESS_LOCAL_WRITE.0;
        let mask = m::IBV_QP_STATE.0
            | m::IBV_QP_PKEY_INDEX.0
            | m::IBV_QP_PORT.0
            | m::IBV_QP_ACCESS_FLAGS.0;
        self.modify(&mut a, mask, "INIT")
    }

    /// INIT -> RTR (ready to receive from `remote`).
    pub fn modify_to_rtr(&mut self, remote: &RemoteQp, path: &PathParams) -> Result<(), Error> {
        use sys::ibv_qp_attr_mask as m;
        // SAFETY: all-zero is a valid value of this plain C struct.
        let mut a: sys::ibv_qp_attr = unsafe { std::mem::zeroed() };
        a.qp_state = sys::ibv_qp_state::IBV_QPS_RTR;
        a.path_mtu = path.mtu;
        a.dest_qp_num = remote.qpn;
        a.rq_psn = remote.psn;
        a.max_dest_rd_atomic = 1;
        a.min_rnr_timer = 12;
        a.ah_attr.is_global = 1;
        a.ah_attr.dlid = remote.lid;
        a.ah_attr.sl = 0;
        a.ah_attr.src_path_bits = 0;
        a.ah_attr.port_num = path.port;
        let route = GlobalRoute {
            dgid: remote.gid,
            flow_label: 0,
            sgid_index: path.gid_index,
            hop_limit: 64,
            traffic_class: 0,
        };
        // SAFETY: `GlobalRoute` has the C layout of `ibv_global_route`
        // (same size, asserted at compile time) and `grh` is a field of a
        // live, exclusively borrowed struct.
        unsafe {
            ptr::write(
                (&mut a.ah_attr.grh as *mut sys::ibv_global_route).cast::<GlobalRoute>(),
                route,
            )
        };
        let mask = m::IBV_QP_STATE.0
            | m::IBV_QP_AV.0
            | m::IBV_QP_PATH_MTU.0
            | m::IBV_QP_DEST_QPN.0
            | m::IBV_QP_RQ_PSN.0
            | m::IBV_QP_MAX_DEST_RD_ATOMIC.0
            | m::IBV_QP_MIN_RNR_TIMER.0;
        self.modify(&mut a, mask, "RTR")
    }

    /// RTR -> RTS, sending from `psn`.
    pub fn modify_to_rts(&mut self, psn: u32, path: &PathParams) -> Result<(), Error> {
        use sys::ibv_qp_attr_mask as m;
        // SAFETY: all-zero is a valid value of this plain C struct.
        let mut a: sys::ibv_qp_attr = unsafe { std::mem::zeroed() };
        a.qp_state = sys::ibv_qp_state::IBV_QPS_RTS;
        a.timeout = path.timeout;
        a.retry_cnt = path.retry_cnt;
        // RNR cannot happen by construction (credits), but if it does,
        // retry a bounded number of times rather than forever (7).
        a.rnr_retry = 6;
        a.sq_psn = psn;
        a.max_rd_atomic = 1;
        let mask = m::IBV_QP_STATE.0
            | m::IBV_QP_TIMEOUT.0
            | m::IBV_QP_RETRY_CNT.0
            | m::IBV_QP_RNR_RETRY.0
            | m::IBV_QP_SQ_PSN.0
            | m::IBV_QP_MAX_QP_RD_ATOMIC.0;
        self.modify(&mut a, mask, "RTS")
    }

    /// Move to ERROR: every outstanding request completes with a flush
    /// error (used when closing).
    pub fn modify_to_error(&mut self) -> Result<(), Error> {
        // SAFETY: all-zero is a valid value of this plain C struct.
        let mut a: sys::ibv_qp_attr = unsafe { std::mem::zeroed() };
        a.qp_state = sys::ibv_qp_state::IBV_QPS_ERR;
        self.modify(&mut a, sys::ibv_qp_attr_mask::IBV_QP_STATE.0, "ERROR")
    }

    /// Post a receive of up to `len` bytes into `region` at `off`.
    pub fn post_recv(
        &mut self,
        wr_id: u64,
        region: &Region,
        off: usize,
        len: usize,
    ) -> Result<(), Error> {
        region.range(off, len)?;
        let mut sge = sys::ibv_sge {
            addr: region.addr() + off as u64,
            length: len as u32,
            lkey: region.lkey(),
        };
        // SAFETY: all-zero is a valid value of this plain C struct.
        let mut wr: sys::ibv_recv_wr = unsafe { std::mem::zeroed() };
        wr.wr_id = wr_id;
        wr.sg_list = &mut sge;
        wr.num_sge = 1;
        let mut bad = ptr::null_mut();
        // SAFETY: `qp` is valid; `wr` and `sge` live across the call (the
        // provider copies them); the buffer is inside a region the caller
        // keeps registered while the QP exists (the engine owns both).
        let rc = unsafe { sys::ibv_post_recv(self.qp, &mut wr, &mut bad) };
        check(rc, "post a receive")
    }

    /// Post a signaled send of `len` bytes of `region` at `off`, as `op`
    /// says.
    pub fn post_send(
        &mut self,
        wr_id: u64,
        region: &Region,
        off: usize,
        len: usize,
        op: SendOp,
    ) -> Result<(), Error> {
        region.range(off, len)?;
        let mut sge = sys::ibv_sge {
            addr: region.addr() + off as u64,
            length: len as u32,
            lkey: region.lkey(),
        };
        // SAFETY: all-zero is a valid value of this C struct (null
        // pointers, zero unions).
        let mut wr: sys::ibv_send_wr = unsafe { std::mem::zeroed() };
        wr.wr_id = wr_id;
        wr.sg_list = &mut sge;
        wr.num_sge = 1;
        wr.send_flags = sys::ibv_send_flags::IBV_SEND_SIGNALED.0;
        match op {
            SendOp::Send { imm } => {
                wr.opcode = sys::ibv_wr_opcode::IBV_WR_SEND_WITH_IMM;
                wr.imm_data_invalidated_rkey_union.imm_data = imm.to_be();
            }
            SendOp::WriteImm { addr, rkey, imm } => {
                wr.opcode = sys::ibv_wr_opcode::IBV_WR_RDMA_WRITE_WITH_IMM;
                wr.imm_data_invalidated_rkey_union.imm_data = imm.to_be();
                wr.wr.rdma = sys::rdma_t {
                    remote_addr: addr,
                    rkey,
                };
            }
            SendOp::Write { addr, rkey } => {
                wr.opcode = sys::ibv_wr_opcode::IBV_WR_RDMA_WRITE;
                wr.wr.rdma = sys::rdma_t {
                    remote_addr: addr,
                    rkey,
                };
            }
        }
        let mut bad = ptr::null_mut();
        // SAFETY: `qp` is valid; `wr` and `sge` live across the call; the
        // source bytes are inside a region the engine keeps registered
        // (and unchanged) until the send completes.
        let rc = unsafe { sys::ibv_post_send(self.qp, &mut wr, &mut bad) };
        check(rc, "post a send")
    }
}

/// What a posted send does with its bytes.
#[derive(Debug, Clone, Copy)]
pub enum SendOp {
    /// SEND with immediate: lands in the peer's next posted receive.
    Send { imm: u32 },
    /// RDMA WRITE with immediate to the peer's `addr`: consumes the peer's
    /// next receive for its completion.
    WriteImm { addr: u64, rkey: u32, imm: u32 },
    /// Plain RDMA WRITE: the peer sees no completion.
    Write { addr: u64, rkey: u32 },
}

impl Drop for Qp {
    fn drop(&mut self) {
        // SAFETY: destroyed once; the CQ and PD outlive it (the engine
        // drops the QP first; the PD is held by `_pd`).
        unsafe { sys::ibv_destroy_qp(self.qp) };
    }
}

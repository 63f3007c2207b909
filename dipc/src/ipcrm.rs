//! `dipc ipcrm`: remove distributed objects by id or by key.
//!
//! ```text
//! dipc ipcrm -m 1073741825 -Q 0x1234
//! ```
//!
//! The options are util-linux `ipcrm`'s: `-m/-q/-s ID` remove a segment,
//! queue or semaphore set by id, `-M/-Q/-S KEY` by key; any number of them
//! in one call. Removal goes through a node daemon's local socket
//! (`--socket`, `DIPC_SOCKET`), as a program's `shmctl`/`msgctl`/`semctl`
//! `IPC_RMID` would, with this process's credentials: the owner, the
//! creator or root may remove, others get "Operation not permitted"; a
//! segment still attached lives on until its last detach, its key is free
//! at once. Each failure is reported on stderr and the exit status is 1 if
//! any removal failed, as util-linux does.

use std::path::PathBuf;

use clap::Args;
use dipc_wire::local::{MsgCtlCmd, Request, SemCtlCmd};
use dipc_wire::{Key, Kind, ObjectId};

use crate::ipcmk::{CallError, NodeConn, parse_num, socket_path};

/// `dipc ipcrm` arguments.
#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("what").required(true).multiple(true)
    .args(["shmid", "msqid", "semid", "shmkey", "msgkey", "semkey"])))]
pub struct IpcrmArgs {
    /// Remove the shared memory segment with this id.
    #[arg(short = 'm', long = "shmem-id", value_name = "ID", value_parser = parse_num)]
    shmid: Vec<ObjectId>,
    /// Remove the message queue with this id.
    #[arg(short = 'q', long = "queue-id", value_name = "ID", value_parser = parse_num)]
    msqid: Vec<ObjectId>,
    /// Remove the semaphore set with this id.
    #[arg(short = 's', long = "semaphore-id", value_name = "ID", value_parser = parse_num)]
    semid: Vec<ObjectId>,
    /// Remove the shared memory segment with this key.
    #[arg(short = 'M', long = "shmem-key", value_name = "KEY", value_parser = parse_num)]
    shmkey: Vec<Key>,
    /// Remove the message queue with this key.
    #[arg(short = 'Q', long = "queue-key", value_name = "KEY", value_parser = parse_num)]
    msgkey: Vec<Key>,
    /// Remove the semaphore set with this key.
    #[arg(short = 'S', long = "semaphore-key", value_name = "KEY", value_parser = parse_num)]
    semkey: Vec<Key>,
    /// The node daemon's local socket.
    #[arg(long, env = "DIPC_SOCKET")]
    socket: Option<PathBuf>,
}

fn noun(kind: Kind) -> &'static str {
    match kind {
        Kind::Shm => "shared memory",
        Kind::Msg => "message queue",
        Kind::Sem => "semaphore",
    }
}

/// The id of `kind`'s object with `key`, through the node (a `*get`
/// without `IPC_CREAT`).
fn id_of(node: &mut NodeConn, kind: Kind, key: Key) -> Result<ObjectId, CallError> {
    let req = match kind {
        Kind::Shm => Request::ShmGet {
            key,
            size: 0,
            flags: 0,
            unit: None,
            mode: None,
            quantum_us: None,
            prefetch: None,
        },
        Kind::Msg => Request::MsgGet { key, flags: 0 },
        Kind::Sem => Request::SemGet {
            key,
            nsems: 0,
            flags: 0,
        },
    };
    node.get_id(&req)
}

fn remove(node: &mut NodeConn, kind: Kind, id: ObjectId) -> Result<(), CallError> {
    let req = match kind {
        Kind::Shm => Request::ShmRmid { id },
        Kind::Msg => Request::MsgCtl {
            id,
            cmd: MsgCtlCmd::Rmid,
        },
        Kind::Sem => Request::SemCtl {
            id,
            cmd: SemCtlCmd::Rmid,
        },
    };
    node.expect_ok(&req)
}

/// `dipc ipcrm`: returns the exit code (1 if any removal failed).
pub fn run(args: IpcrmArgs, file: &crate::config::FileConfig) -> anyhow::Result<i32> {
    let socket = socket_path(args.socket, file);
    let mut node = NodeConn::connect(&socket)?;
    let mut failed = false;
    let by_id = [
        (Kind::Shm, &args.shmid),
        (Kind::Msg, &args.msqid),
        (Kind::Sem, &args.semid),
    ];
    for (kind, ids) in by_id {
        for &id in ids {
            if let Err(e) = remove(&mut node, kind, id) {
                eprintln!("dipc ipcrm: {} id {id}: {e}", noun(kind));
                failed = true;
            }
        }
    }
    let by_key = [
        (Kind::Shm, &args.shmkey),
        (Kind::Msg, &args.msgkey),
        (Kind::Sem, &args.semkey),
    ];
    for (kind, keys) in by_key {
        for &key in keys {
            let res = if key == dipc_wire::IPC_PRIVATE {
                Err(CallError::Errno(dipc_wire::errno::EINVAL))
            } else {
                id_of(&mut node, kind, key).and_then(|id| remove(&mut node, kind, id))
            };
            if let Err(e) = res {
                eprintln!("dipc ipcrm: {} key {:#x}: {e}", noun(kind), key as u32);
                failed = true;
            }
        }
    }
    Ok(i32::from(failed))
}

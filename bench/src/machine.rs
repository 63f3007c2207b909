//! What machine the numbers were measured on.
//!
//! A latency figure means little without the kernel (uffd and fault-path
//! costs change between releases), the CPU and the number of cores (a
//! fault handler and its faulting thread compete for two cores on a small
//! VM). Read from `/proc`, never failing: an unknown field says so.

use serde::Serialize;

/// The machine a report was measured on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Machine {
    /// `uname -r`.
    pub kernel: String,
    /// The first `model name` of `/proc/cpuinfo`.
    pub cpu_model: String,
    /// CPUs this process may run on.
    pub cores: usize,
    /// Bytes per page.
    pub page_size: u64,
    pub hostname: String,
}

impl Machine {
    /// Probe the current machine.
    pub fn probe() -> Machine {
        let read = |p: &str| {
            std::fs::read_to_string(p)
                .map(|s| s.trim().to_string())
                .unwrap_or_else(|_| "unknown".into())
        };
        Machine {
            kernel: read("/proc/sys/kernel/osrelease"),
            cpu_model: std::fs::read_to_string("/proc/cpuinfo")
                .ok()
                .and_then(|s| cpu_model(&s))
                .unwrap_or_else(|| "unknown".into()),
            cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
            page_size: dipc_shmem::page_size(),
            hostname: read("/proc/sys/kernel/hostname"),
        }
    }
}

/// The CPU model from the text of `/proc/cpuinfo` (x86: `model name`;
/// arm64 has none, so `CPU implementer`/`CPU part` stand in).
fn cpu_model(cpuinfo: &str) -> Option<String> {
    let field = |name: &str| {
        cpuinfo.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim() == name).then(|| v.trim().to_string())
        })
    };
    field("model name").or_else(|| {
        let imp = field("CPU implementer")?;
        let part = field("CPU part")?;
        Some(format!("implementer {imp} part {part}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_model_from_x86_and_arm_cpuinfo() {
        let x86 = "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) CPU @ 2.20GHz\n";
        assert_eq!(
            cpu_model(x86).as_deref(),
            Some("Intel(R) Xeon(R) CPU @ 2.20GHz")
        );
        let arm = "processor\t: 0\nCPU implementer\t: 0x41\nCPU part\t: 0xd0c\n";
        assert_eq!(
            cpu_model(arm).as_deref(),
            Some("implementer 0x41 part 0xd0c")
        );
        assert_eq!(cpu_model("nothing here"), None);
    }

    #[test]
    fn probe_reads_this_machine() {
        let m = Machine::probe();
        assert!(m.cores >= 1);
        assert!(m.page_size >= 4096);
        assert_ne!(m.kernel, "");
    }
}

//! The sandbox's network: a namespace of its own joined to the host by a veth pair on a /30
//! of its own, a default route to the host end (where its gateway listens), IPv6 off, and the
//! `netpol` rules loaded as an nftables table named by the run id.

use std::fs;
use std::io::ErrorKind;
use std::net::Ipv4Addr;
use std::path::Path;

use super::host::{Error, RUNS, output, tool};

/// The first address of the pool; slot `n` is the /30 at `BASE + 4n`.
pub const BASE: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 0);
/// How many /30s the pool holds (10.77.0.0/16).
pub const SLOTS: u32 = 1 << 14;

/// The two ends of a sandbox's link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Addrs {
    /// The host end, where the sandbox's gateway listens.
    pub gateway: Ipv4Addr,
    /// The sandbox's own address.
    pub sandbox: Ipv4Addr,
}

impl Addrs {
    /// The addresses of slot `n`.
    pub fn of_slot(n: u32) -> Addrs {
        let net = u32::from(BASE) + 4 * n;
        Addrs {
            gateway: Ipv4Addr::from(net + 1),
            sandbox: Ipv4Addr::from(net + 2),
        }
    }
}

/// The network namespace of run `id`.
pub fn netns(id: &str) -> String {
    format!("centaur-{id}")
}

/// The host end of run `id`'s veth pair (15 characters at most, as the kernel requires).
pub fn host_iface(id: &str) -> String {
    format!("cs{id}")
}

fn slots_dir() -> std::path::PathBuf {
    Path::new(RUNS).join("slots")
}

/// Claims the lowest free slot for `id`: a symlink `slots/<n> -> id`, which the kernel
/// creates atomically, so two runs starting at once never share an address. Slots whose /30
/// holds an address the host already has (another network using 10.77/16) are skipped.
pub fn claim_slot(id: &str) -> Result<u32, Error> {
    let dir = slots_dir();
    fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let taken = host_addrs()?;
    for n in 0..SLOTS {
        let net = u32::from(BASE) + 4 * n;
        if taken
            .iter()
            .any(|a| (net..net + 4).contains(&u32::from(*a)))
        {
            continue;
        }
        match std::os::unix::fs::symlink(id, dir.join(n.to_string())) {
            Ok(()) => return Ok(n),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(Error::io(&dir, e)),
        }
    }
    Err(Error::NoFreeSlot(SLOTS))
}

/// The IPv4 addresses on the host's interfaces.
fn host_addrs() -> Result<Vec<Ipv4Addr>, Error> {
    let out = output("ip", &["-4", "-o", "addr", "show"])?;
    Ok(out
        .lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            words.find(|w| *w == "inet")?;
            words.next()?.split('/').next()?.parse().ok()
        })
        .collect())
}

/// The slots `id` holds (one, unless something went badly wrong).
pub fn slots_of(id: &str) -> Vec<u32> {
    owners()
        .into_iter()
        .filter(|(_, owner)| owner == id)
        .map(|(n, _)| n)
        .collect()
}

/// Every claimed slot and the run that holds it.
pub fn owners() -> Vec<(u32, String)> {
    let Ok(entries) = fs::read_dir(slots_dir()) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let n = e.file_name().to_str()?.parse().ok()?;
            let owner = fs::read_link(e.path()).ok()?;
            Some((n, owner.to_str()?.to_string()))
        })
        .collect()
}

/// Creates the namespace, the veth pair, addresses, routes and the nftables table.
pub fn create(id: &str, addrs: Addrs, rules: &str) -> Result<(), Error> {
    let ns = netns(id);
    let host = host_iface(id);
    tool("ip", &["netns", "add", &ns], None)?;
    // Before any interface exists in it: no IPv6 at all inside, not even link-local.
    tool(
        "ip",
        &[
            "netns",
            "exec",
            &ns,
            "sysctl",
            "-qw",
            "net.ipv6.conf.all.disable_ipv6=1",
            "net.ipv6.conf.default.disable_ipv6=1",
        ],
        None,
    )?;
    let (g, s) = (addrs.gateway, addrs.sandbox);
    let host_side = format!(
        "link add {host} type veth peer name eth0 netns {ns}\n\
         addr add {g}/30 dev {host}\n\
         link set {host} up\n"
    );
    tool("ip", &["-batch", "-"], Some(&host_side))?;
    let inside = format!(
        "addr add {s}/30 dev eth0\nlink set eth0 up\nlink set lo up\nroute add default via {g}\n"
    );
    tool("ip", &["-n", &ns, "-batch", "-"], Some(&inside))?;
    tool("nft", &["-f", "-"], Some(rules))?;
    Ok(())
}

/// Removes what [`create`] made, whatever of it exists. Deleting the namespace destroys the
/// veth pair; the host end is deleted by name too, in case the namespace is already gone.
pub fn remove(id: &str, table: &str) -> Vec<String> {
    let mut removed = Vec::new();
    if tool("nft", &["delete", "table", "inet", table], None).is_ok() {
        removed.push(format!("nftables table inet {table}"));
    }
    let ns = netns(id);
    if Path::new("/run/netns").join(&ns).exists()
        && tool("ip", &["netns", "delete", &ns], None).is_ok()
    {
        removed.push(format!("network namespace {ns}"));
    }
    let host = host_iface(id);
    if Path::new("/sys/class/net").join(&host).exists()
        && tool("ip", &["link", "delete", &host], None).is_ok()
    {
        removed.push(format!("veth {host}"));
    }
    for n in slots_of(id) {
        if fs::remove_file(slots_dir().join(n.to_string())).is_ok() {
            removed.push(format!("address slot {n}"));
        }
    }
    removed
}

/// Run ids that own a network namespace, a host veth end or an nftables table, live or not.
pub fn leftovers() -> Vec<String> {
    let mut ids = Vec::new();
    if let Ok(entries) = fs::read_dir("/run/netns") {
        for e in entries.flatten() {
            if let Some(id) = e
                .file_name()
                .to_str()
                .and_then(|n| n.strip_prefix("centaur-"))
            {
                ids.push(id.to_string());
            }
        }
    }
    if let Ok(entries) = fs::read_dir("/sys/class/net") {
        for e in entries.flatten() {
            if let Some(id) = e.file_name().to_str().and_then(|n| n.strip_prefix("cs")) {
                ids.push(id.to_string());
            }
        }
    }
    if let Ok(out) = output("nft", &["list", "tables", "inet"]) {
        for line in out.lines() {
            if let Some(t) = line.strip_prefix("table inet centaur_") {
                ids.push(t.trim().replace('_', "-"));
            }
        }
    }
    ids.extend(owners().into_iter().map(|(_, id)| id));
    ids
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_disjoint_slash_30s_inside_the_pool() {
        let a = Addrs::of_slot(0);
        assert_eq!(a.gateway, Ipv4Addr::new(10, 77, 0, 1));
        assert_eq!(a.sandbox, Ipv4Addr::new(10, 77, 0, 2));
        let b = Addrs::of_slot(1);
        assert_eq!(b.gateway, Ipv4Addr::new(10, 77, 0, 5));
        let last = Addrs::of_slot(SLOTS - 1);
        assert_eq!(last.sandbox, Ipv4Addr::new(10, 77, 255, 254));
    }

    #[test]
    fn names_fit_the_kernel_limits() {
        assert_eq!(host_iface("0123abcd").len(), 10);
        assert!(netns("0123abcd").starts_with("centaur-"));
    }
}

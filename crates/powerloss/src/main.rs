//! strom-powerloss: an in-memory FUSE filesystem that keeps, for every file, what was last fsynced apart from what
//! was written since. Writing anything to `<mount>/.powercut` cuts the power: every file goes back to its fsynced
//! contents, as after a machine losing power, where kill -9 would leave the page cache (and so every unsynced
//! write) intact. A crash-consistency test runs the broker on the mount, kills it, cuts the power, restarts it and
//! checks that everything acknowledged as durable is still there.
//!
//! `--ignore-fsync-suffix .log` makes fsyncs of files with that suffix (outside `meta/`) no-ops: the broker's log
//! segments are then never durable, which is how the test shows that it notices a missing fsync.
//!
//! Model: file contents are durable only when fsynced. Directory entries (create, mkdir, rename, unlink) are
//! durable once their directory is fsynced, as POSIX promises and no more (ext4 and XFS often make them durable
//! with the file's own fsync, other filesystems do not); `--lenient-dirs` makes them durable at once instead.
//! `--ignore-dir-fsync` makes directory fsyncs no-ops, to show a test notices a missing one.
//!
//!   strom-powerloss /mnt/powerloss [--ignore-fsync-suffix .log] [--ignore-dir-fsync] [--lenient-dirs]
//!   (runs until `umount /mnt/powerloss`)

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use clap::Parser;
use fuser::{
    FileAttr, FileType, Filesystem, MountOption, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty,
    ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow,
};
use libc::{EEXIST, EINVAL, EISDIR, ENOENT, ENOTDIR, ENOTEMPTY};

#[derive(Parser)]
struct Args {
    /// Where to mount (an existing, empty directory).
    mountpoint: PathBuf,
    /// fsync of files whose name ends with this (outside `meta/`) does nothing: a deliberately missing fsync.
    #[arg(long)]
    ignore_fsync_suffix: Option<String>,
    /// Directory fsyncs below the mount's root do nothing: a deliberately missing one.
    #[arg(long)]
    ignore_dir_fsync: bool,
    /// Directory entries are durable as soon as they are made.
    #[arg(long)]
    lenient_dirs: bool,
}

/// Attributes are never cached by the kernel, so sizes after a power cut are seen at once.
const TTL: Duration = Duration::ZERO;
const ROOT: u64 = 1;
const CONTROL: u64 = 2;
const CONTROL_NAME: &str = ".powercut";

enum Node {
    File {
        data: Vec<u8>,
        durable: Vec<u8>,
    },
    /// `durable`: the entries as of the directory's last fsync.
    Dir {
        children: BTreeMap<String, u64>,
        durable: BTreeMap<String, u64>,
    },
}

fn empty_dir() -> Node {
    Node::Dir { children: BTreeMap::new(), durable: BTreeMap::new() }
}

struct Inode {
    node: Node,
    name: String,
    parent: u64,
    mode: u16,
    mtime: SystemTime,
}

struct PowerLossFs {
    inodes: HashMap<u64, Inode>,
    next_ino: u64,
    ignore_fsync_suffix: Option<String>,
    ignore_dir_fsync: bool,
    lenient_dirs: bool,
    cuts: u64,
}

impl PowerLossFs {
    fn new(args: &Args) -> Self {
        let mut inodes = HashMap::new();
        let now = SystemTime::now();
        let mut root_children = BTreeMap::new();
        root_children.insert(CONTROL_NAME.to_string(), CONTROL);
        inodes.insert(
            ROOT,
            Inode {
                node: Node::Dir { durable: root_children.clone(), children: root_children },
                name: String::new(),
                parent: ROOT,
                mode: 0o755,
                mtime: now,
            },
        );
        inodes.insert(
            CONTROL,
            Inode {
                node: Node::File { data: Vec::new(), durable: Vec::new() },
                name: CONTROL_NAME.into(),
                parent: ROOT,
                mode: 0o644,
                mtime: now,
            },
        );
        PowerLossFs {
            inodes,
            next_ino: 3,
            ignore_fsync_suffix: args.ignore_fsync_suffix.clone(),
            ignore_dir_fsync: args.ignore_dir_fsync,
            lenient_dirs: args.lenient_dirs,
            cuts: 0,
        }
    }

    fn attr(&self, ino: u64) -> Option<FileAttr> {
        let i = self.inodes.get(&ino)?;
        let (kind, size, nlink) = match &i.node {
            Node::File { data, .. } => (FileType::RegularFile, data.len() as u64, 1),
            Node::Dir { .. } => (FileType::Directory, 4096, 2),
        };
        Some(FileAttr {
            ino,
            size,
            blocks: size.div_ceil(512),
            atime: i.mtime,
            mtime: i.mtime,
            ctime: i.mtime,
            crtime: i.mtime,
            kind,
            perm: i.mode,
            nlink,
            uid: 0,
            gid: 0,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        })
    }

    fn child(&self, parent: u64, name: &OsStr) -> Option<u64> {
        match &self.inodes.get(&parent)?.node {
            Node::Dir { children, .. } => children.get(name.to_str()?).copied(),
            Node::File { .. } => None,
        }
    }

    fn add(&mut self, parent: u64, name: &OsStr, node: Node, mode: u16) -> Result<u64, i32> {
        let name = name.to_str().ok_or(EINVAL)?.to_string();
        let ino = self.next_ino;
        match self.inodes.get_mut(&parent).map(|p| &mut p.node) {
            Some(Node::Dir { children, .. }) => {
                if children.contains_key(&name) {
                    return Err(EEXIST);
                }
                children.insert(name.clone(), ino);
            }
            Some(Node::File { .. }) => return Err(ENOTDIR),
            None => return Err(ENOENT),
        }
        self.next_ino += 1;
        self.inodes.insert(ino, Inode { node, name, parent, mode, mtime: SystemTime::now() });
        self.entries_changed(parent);
        Ok(ino)
    }

    fn in_meta_dir(&self, ino: u64) -> bool {
        let parent = self.inodes.get(&ino).map(|i| i.parent).unwrap_or(ROOT);
        self.inodes.get(&parent).is_some_and(|p| p.name == "meta")
    }

    /// With lenient directories, an entry is durable as soon as it is made.
    fn entries_changed(&mut self, dir: u64) {
        if self.lenient_dirs {
            if let Some(Node::Dir { children, durable }) = self.inodes.get_mut(&dir).map(|d| &mut d.node) {
                durable.clone_from(children);
            }
        }
    }

    /// Every file back to what was last fsynced, every directory back to its entries at its last fsync.
    fn power_cut(&mut self) {
        self.cuts += 1;
        let (mut lost, mut lost_entries) = (0usize, 0usize);
        for (ino, i) in self.inodes.iter_mut() {
            if *ino == CONTROL {
                continue;
            }
            match &mut i.node {
                Node::File { data, durable } => {
                    if data != durable {
                        lost += 1;
                    }
                    *data = durable.clone();
                }
                Node::Dir { children, durable } => {
                    lost_entries += children.iter().filter(|(n, c)| durable.get(*n) != Some(*c)).count();
                    *children = durable.clone();
                }
            }
        }
        // Names and parents as the durable tree has them (a rename that was not durable is undone).
        let mut stack = vec![ROOT];
        while let Some(dir) = stack.pop() {
            let children: Vec<(String, u64)> = match self.inodes.get(&dir).map(|d| &d.node) {
                Some(Node::Dir { children, .. }) => children.iter().map(|(n, c)| (n.clone(), *c)).collect(),
                _ => continue,
            };
            for (name, child) in children {
                if let Some(c) = self.inodes.get_mut(&child) {
                    c.name = name;
                    c.parent = dir;
                    if matches!(c.node, Node::Dir { .. }) {
                        stack.push(child);
                    }
                }
            }
        }
        eprintln!(
            "strom-powerloss: power cut #{}: {lost} files lost unsynced writes, {lost_entries} directory entries lost",
            self.cuts
        );
    }

    fn remove(&mut self, parent: u64, name: &OsStr, want_dir: bool) -> Result<(), i32> {
        let ino = self.child(parent, name).ok_or(ENOENT)?;
        match self.inodes.get(&ino).map(|i| &i.node) {
            Some(Node::Dir { children, .. }) if want_dir && !children.is_empty() => return Err(ENOTEMPTY),
            Some(Node::Dir { .. }) if want_dir => {}
            Some(Node::Dir { .. }) => return Err(EISDIR),
            Some(Node::File { .. }) if want_dir => return Err(ENOTDIR),
            _ => {}
        }
        if let Some(Node::Dir { children, .. }) = self.inodes.get_mut(&parent).map(|p| &mut p.node) {
            children.remove(name.to_str().unwrap_or_default());
        }
        self.entries_changed(parent);
        // Open handles may still read an unlinked file, and a power cut may bring its entry back: kept until the
        // unmount.
        Ok(())
    }
}

impl Filesystem for PowerLossFs {
    fn lookup(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEntry) {
        match self.child(parent, name).and_then(|ino| self.attr(ino)) {
            Some(a) => reply.entry(&TTL, &a, 0),
            None => reply.error(ENOENT),
        }
    }

    fn getattr(&mut self, _req: &Request<'_>, ino: u64, _fh: Option<u64>, reply: ReplyAttr) {
        match self.attr(ino) {
            Some(a) => reply.attr(&TTL, &a),
            None => reply.error(ENOENT),
        }
    }

    fn setattr(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<u64>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<u32>,
        reply: ReplyAttr,
    ) {
        let Some(i) = self.inodes.get_mut(&ino) else { return reply.error(ENOENT) };
        if let Some(m) = mode {
            i.mode = (m & 0o7777) as u16;
        }
        if let (Some(size), Node::File { data, .. }) = (size, &mut i.node) {
            data.resize(size as usize, 0);
            i.mtime = SystemTime::now();
        }
        match self.attr(ino) {
            Some(a) => reply.attr(&TTL, &a),
            None => reply.error(ENOENT),
        }
    }

    fn mkdir(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, mode: u32, _umask: u32, reply: ReplyEntry) {
        match self.add(parent, name, empty_dir(), (mode & 0o7777) as u16) {
            Ok(ino) => reply.entry(&TTL, &self.attr(ino).expect("just added"), 0),
            Err(e) => reply.error(e),
        }
    }

    fn create(
        &mut self,
        _req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        let node = Node::File { data: Vec::new(), durable: Vec::new() };
        match self.add(parent, name, node, (mode & 0o7777) as u16) {
            Ok(ino) => reply.created(&TTL, &self.attr(ino).expect("just added"), 0, 0, fuser::consts::FOPEN_DIRECT_IO),
            Err(e) => reply.error(e),
        }
    }

    fn unlink(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEmpty) {
        match self.remove(parent, name, false) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn rmdir(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEmpty) {
        match self.remove(parent, name, true) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn rename(
        &mut self,
        _req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        newparent: u64,
        newname: &OsStr,
        _flags: u32,
        reply: ReplyEmpty,
    ) {
        let Some(ino) = self.child(parent, name) else { return reply.error(ENOENT) };
        let (Some(old), Some(new)) = (name.to_str(), newname.to_str()) else { return reply.error(EINVAL) };
        if !matches!(self.inodes.get(&newparent).map(|p| &p.node), Some(Node::Dir { .. })) {
            return reply.error(ENOTDIR);
        }
        if let Some(existing) = self.child(newparent, newname) {
            if let Some(Node::Dir { children, .. }) = self.inodes.get(&existing).map(|i| &i.node) {
                if !children.is_empty() {
                    return reply.error(ENOTEMPTY);
                }
            }
        }
        if let Some(Node::Dir { children, .. }) = self.inodes.get_mut(&parent).map(|p| &mut p.node) {
            children.remove(old);
        }
        if let Some(Node::Dir { children, .. }) = self.inodes.get_mut(&newparent).map(|p| &mut p.node) {
            children.insert(new.to_string(), ino);
        }
        self.entries_changed(parent);
        self.entries_changed(newparent);
        if let Some(i) = self.inodes.get_mut(&ino) {
            i.name = new.to_string();
            i.parent = newparent;
        }
        reply.ok();
    }

    fn open(&mut self, _req: &Request<'_>, ino: u64, _flags: i32, reply: ReplyOpen) {
        match self.inodes.get(&ino) {
            // No page cache: every read and write reaches this process, so a power cut is seen by the next read.
            Some(_) => reply.opened(0, fuser::consts::FOPEN_DIRECT_IO),
            None => reply.error(ENOENT),
        }
    }

    fn read(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        offset: i64,
        size: u32,
        _flags: i32,
        _lock_owner: Option<u64>,
        reply: ReplyData,
    ) {
        match self.inodes.get(&ino).map(|i| &i.node) {
            Some(Node::File { data, .. }) => {
                let start = (offset.max(0) as usize).min(data.len());
                let end = start.saturating_add(size as usize).min(data.len());
                reply.data(&data[start..end]);
            }
            Some(Node::Dir { .. }) => reply.error(EISDIR),
            None => reply.error(ENOENT),
        }
    }

    fn write(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        offset: i64,
        bytes: &[u8],
        _write_flags: u32,
        _flags: i32,
        _lock_owner: Option<u64>,
        reply: ReplyWrite,
    ) {
        if ino == CONTROL {
            self.power_cut();
            return reply.written(bytes.len() as u32);
        }
        let Some(i) = self.inodes.get_mut(&ino) else { return reply.error(ENOENT) };
        match &mut i.node {
            Node::File { data, .. } => {
                let start = offset.max(0) as usize;
                let end = start + bytes.len();
                if data.len() < end {
                    data.resize(end, 0);
                }
                data[start..end].copy_from_slice(bytes);
                i.mtime = SystemTime::now();
                reply.written(bytes.len() as u32);
            }
            Node::Dir { .. } => reply.error(EISDIR),
        }
    }

    fn flush(&mut self, _req: &Request<'_>, _ino: u64, _fh: u64, _lock_owner: u64, reply: ReplyEmpty) {
        reply.ok();
    }

    fn release(
        &mut self,
        _req: &Request<'_>,
        _ino: u64,
        _fh: u64,
        _flags: i32,
        _lock_owner: Option<u64>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn fsync(&mut self, _req: &Request<'_>, ino: u64, _fh: u64, _datasync: bool, reply: ReplyEmpty) {
        let ignored = match (&self.ignore_fsync_suffix, self.inodes.get(&ino)) {
            (Some(suffix), Some(i)) => i.name.ends_with(suffix.as_str()) && !self.in_meta_dir(ino),
            _ => false,
        };
        if !ignored {
            if let Some(Inode { node: Node::File { data, durable }, .. }) = self.inodes.get_mut(&ino) {
                durable.clone_from(data);
            }
        }
        reply.ok();
    }

    fn opendir(&mut self, _req: &Request<'_>, ino: u64, _flags: i32, reply: ReplyOpen) {
        match self.inodes.get(&ino).map(|i| &i.node) {
            Some(Node::Dir { .. }) => reply.opened(0, 0),
            Some(Node::File { .. }) => reply.error(ENOTDIR),
            None => reply.error(ENOENT),
        }
    }

    fn readdir(&mut self, _req: &Request<'_>, ino: u64, _fh: u64, offset: i64, mut reply: ReplyDirectory) {
        let Some(i) = self.inodes.get(&ino) else { return reply.error(ENOENT) };
        let Node::Dir { children, .. } = &i.node else { return reply.error(ENOTDIR) };
        let mut entries =
            vec![(ino, FileType::Directory, ".".to_string()), (i.parent, FileType::Directory, "..".into())];
        for (name, child) in children {
            let kind = match self.inodes.get(child).map(|c| &c.node) {
                Some(Node::Dir { .. }) => FileType::Directory,
                _ => FileType::RegularFile,
            };
            entries.push((*child, kind, name.clone()));
        }
        for (n, (ino, kind, name)) in entries.into_iter().enumerate().skip(offset.max(0) as usize) {
            if reply.add(ino, (n + 1) as i64, kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn releasedir(&mut self, _req: &Request<'_>, _ino: u64, _fh: u64, _flags: i32, reply: ReplyEmpty) {
        reply.ok();
    }

    fn fsyncdir(&mut self, _req: &Request<'_>, ino: u64, _fh: u64, _datasync: bool, reply: ReplyEmpty) {
        // The mount's root is the operator's, not the broker's: its fsyncs always count.
        if !self.ignore_dir_fsync || ino == ROOT {
            if let Some(Node::Dir { children, durable }) = self.inodes.get_mut(&ino).map(|d| &mut d.node) {
                durable.clone_from(children);
            }
        }
        reply.ok();
    }

    fn statfs(&mut self, _req: &Request<'_>, _ino: u64, reply: ReplyStatfs) {
        // Plenty of room: the broker must not think the disk is full.
        reply.statfs(1 << 24, 1 << 24, 1 << 24, 1 << 20, 1 << 20, 4096, 255, 4096);
    }

    fn access(&mut self, _req: &Request<'_>, _ino: u64, _mask: i32, reply: ReplyEmpty) {
        reply.ok();
    }

    fn fallocate(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        offset: i64,
        length: i64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        if mode != 0 {
            return reply.error(libc::EOPNOTSUPP);
        }
        match self.inodes.get_mut(&ino).map(|i| &mut i.node) {
            Some(Node::File { data, .. }) => {
                let end = (offset.max(0) + length.max(0)) as usize;
                if data.len() < end {
                    data.resize(end, 0);
                }
                reply.ok();
            }
            _ => reply.error(ENOENT),
        }
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let fs = PowerLossFs::new(&args);
    let options = [MountOption::FSName("strom-powerloss".into()), MountOption::RW, MountOption::DefaultPermissions];
    fuser::mount2(fs, &args.mountpoint, &options)?;
    Ok(())
}

//! Memory-mapped files that may be cut short while mapped.
//!
//! Reading a page of a map that lies past its file's end (the file was
//! truncated or rewritten under the process) raises SIGBUS, which kills the
//! process. Checking the file's size before a read ([`shrank`]) catches a
//! file cut earlier, but not one cut between the check and the read. So
//! every [`Mapped`] file is also registered with a SIGBUS handler: a fault
//! inside a registered map puts a page of zeros where the lost page was,
//! marks the map as damaged and lets the read go on; the reader then asks
//! [`Mapped::check`] after reading and turns the damage into an error that
//! names the file. A fault anywhere else goes to the handler that was there
//! before (by default the process dies with SIGBUS, as without this module).
//!
//! The handler does only what a signal handler may: atomic loads and stores
//! over a fixed table, and `mmap`.

use memmap2::Mmap;
use std::fs::File;

/// Whether `file`, mapped when it had `mapped` bytes, has fewer now (what
/// to say, then). A file cut short under its map raises SIGBUS on the first
/// read past its new end.
fn shrank(file: &File, mapped: u64) -> Option<String> {
    let now = file.metadata().map(|m| m.len()).unwrap_or(0);
    (now < mapped).then(|| {
        format!(
            "the file shrank to {now} bytes while open (it had {mapped}): rewritten or \
             truncated under this process?"
        )
    })
}

/// A read-only map of a whole file, registered with the SIGBUS handler
/// while it lives.
pub struct Mapped {
    file: File,
    map: Mmap,
    /// Its entry in the handler's table (None: the table was full, or the
    /// map is empty; then only the size check before a read protects it).
    slot: Option<usize>,
}

impl Mapped {
    /// Map `file` (opened for reading) whole.
    ///
    /// # Safety
    /// As [`Mmap::map`]: the bytes may change if another process writes the
    /// file; a file cut short is what this type makes an error rather than
    /// a crash.
    pub unsafe fn map(file: File) -> std::io::Result<Self> {
        // SAFETY: the caller's promise, as for `Mmap::map`.
        let map = unsafe { Mmap::map(&file) }?;
        let slot = if map.is_empty() {
            None
        } else {
            guard::register(map.as_ptr() as usize, map.len())
        };
        Ok(Self { file, map, slot })
    }

    pub fn bytes(&self) -> &[u8] {
        &self.map
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// None while the file still has the size it was mapped with and no
    /// read has hit a page past its end; else what to say. Readers ask
    /// before reading (a file cut earlier) and after (a file cut during
    /// the read, whose lost pages read as zeros).
    pub fn check(&self) -> Option<String> {
        let lost = self.slot.is_some_and(guard::lost);
        match shrank(&self.file, self.map.len() as u64) {
            Some(m) => Some(m),
            None if lost => Some(
                "a read hit a page that was cut from the file while it was read (truncated \
                 under this process?)"
                    .into(),
            ),
            None => None,
        }
    }

    /// Give the pages under `bytes` (a slice of this map) back to the
    /// system: a loader that has copied a tensor out of the map releases
    /// it, so a model read once is not held twice (its file's pages in this
    /// process's memory beside the copy). Only memory use changes: a page
    /// touched again is read again from the file.
    pub fn release(&self, bytes: &[u8]) {
        let base = self.map.as_ptr() as usize;
        let at = bytes.as_ptr() as usize;
        if bytes.is_empty() || at < base || at - base + bytes.len() > self.map.len() {
            return;
        }
        #[cfg(unix)]
        // SAFETY: a read-only map of a file: nothing in it was written, so a
        // dropped page is the file's again when touched (a page the SIGBUS
        // handler replaced stays zeros, and the map stays marked).
        let _ = unsafe {
            self.map.unchecked_advise_range(
                memmap2::UncheckedAdvice::DontNeed,
                at - base,
                bytes.len(),
            )
        };
    }

    /// `read` over the bytes, between two [`Self::check`]s: its result only
    /// if every byte it saw came from the file.
    pub fn read<T>(&self, read: impl FnOnce(&[u8]) -> T) -> Result<T, String> {
        if let Some(m) = self.check() {
            return Err(m);
        }
        let out = read(&self.map);
        match self.check() {
            Some(m) => Err(m),
            None => Ok(out),
        }
    }
}

impl Drop for Mapped {
    fn drop(&mut self) {
        if let Some(slot) = self.slot {
            guard::unregister(slot);
        }
    }
}

impl std::fmt::Debug for Mapped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mapped")
            .field("len", &self.map.len())
            .field("guarded", &self.slot.is_some())
            .finish()
    }
}

#[cfg(target_os = "linux")]
mod guard {
    use std::sync::Once;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    /// Maps guarded at once (a database has a file per unit: 210 for
    /// SmolLM2, a few thousand for an 8B model with several kinds).
    const SLOTS: usize = 8192;

    struct Slot {
        busy: AtomicBool,
        start: AtomicUsize,
        len: AtomicUsize,
        lost: AtomicBool,
    }

    static TABLE: [Slot; SLOTS] = [const {
        Slot {
            busy: AtomicBool::new(false),
            start: AtomicUsize::new(0),
            len: AtomicUsize::new(0),
            lost: AtomicBool::new(false),
        }
    }; SLOTS];
    static PAGE: AtomicUsize = AtomicUsize::new(4096);
    static INSTALL: Once = Once::new();
    /// Whether the handler is in place (it may not be: sigaction failed).
    static INSTALLED: AtomicBool = AtomicBool::new(false);
    /// The action that was there before ours, for faults that are not ours.
    static mut PREVIOUS: Option<libc::sigaction> = None;

    fn install() {
        INSTALL.call_once(|| {
            // SAFETY: plain libc calls; PREVIOUS is written once, here,
            // before the handler that reads it can run.
            unsafe {
                let page = libc::sysconf(libc::_SC_PAGESIZE);
                if page > 0 {
                    PAGE.store(page as usize, Ordering::Relaxed);
                }
                let mut new: libc::sigaction = std::mem::zeroed();
                new.sa_sigaction = on_sigbus as *const () as usize;
                new.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
                libc::sigemptyset(&mut new.sa_mask);
                let mut old: libc::sigaction = std::mem::zeroed();
                if libc::sigaction(libc::SIGBUS, &new, &mut old) == 0 {
                    *std::ptr::addr_of_mut!(PREVIOUS) = Some(old);
                    INSTALLED.store(true, Ordering::Release);
                }
            }
        });
    }

    pub fn register(start: usize, len: usize) -> Option<usize> {
        install();
        if !INSTALLED.load(Ordering::Acquire) {
            return None;
        }
        for (i, s) in TABLE.iter().enumerate() {
            if s.busy
                .compare_exchange(false, true, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
            {
                s.lost.store(false, Ordering::Relaxed);
                s.len.store(len, Ordering::Relaxed);
                s.start.store(start, Ordering::Release);
                return Some(i);
            }
        }
        None
    }

    pub fn unregister(i: usize) {
        let s = &TABLE[i];
        s.start.store(0, Ordering::Release);
        s.len.store(0, Ordering::Relaxed);
        s.lost.store(false, Ordering::Relaxed);
        s.busy.store(false, Ordering::Release);
    }

    pub fn lost(i: usize) -> bool {
        TABLE[i].lost.load(Ordering::Acquire)
    }

    extern "C" fn on_sigbus(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
        // SAFETY: the kernel hands a valid siginfo to an SA_SIGINFO handler.
        let addr = unsafe { (*info).si_addr() } as usize;
        let page = PAGE.load(Ordering::Relaxed);
        for s in TABLE.iter() {
            let start = s.start.load(Ordering::Acquire);
            if start == 0 || addr < start {
                continue;
            }
            let len = s.len.load(Ordering::Relaxed);
            if addr - start >= len {
                continue;
            }
            // A page of zeros over the lost one, in the map's own range
            // (munmap of the map later frees it with the rest).
            let at = addr & !(page - 1);
            // SAFETY: `at` is a page of a live map registered by its owner;
            // MAP_FIXED replaces that page only.
            let p = unsafe {
                libc::mmap(
                    at as *mut libc::c_void,
                    page,
                    libc::PROT_READ,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                    -1,
                    0,
                )
            };
            if p != libc::MAP_FAILED {
                s.lost.store(true, Ordering::Release);
                return;
            }
            break;
        }
        // Not ours: what would have happened without this handler.
        // SAFETY: PREVIOUS was set before this handler was installed.
        let previous = unsafe { *std::ptr::addr_of!(PREVIOUS) };
        unsafe {
            match previous {
                Some(old)
                    if old.sa_sigaction != libc::SIG_DFL && old.sa_sigaction != libc::SIG_IGN =>
                {
                    if old.sa_flags & libc::SA_SIGINFO != 0 {
                        let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
                            std::mem::transmute(old.sa_sigaction);
                        f(sig, info, ctx);
                    } else {
                        let f: extern "C" fn(libc::c_int) = std::mem::transmute(old.sa_sigaction);
                        f(sig);
                    }
                }
                // The default action: put it back and return, so the fault
                // happens again and kills the process as it would have.
                _ => {
                    let mut dfl: libc::sigaction = std::mem::zeroed();
                    dfl.sa_sigaction = libc::SIG_DFL;
                    libc::sigaction(libc::SIGBUS, &dfl, std::ptr::null_mut());
                }
            }
        }
    }
}

/// Elsewhere: no handler; the size check before each read is all.
#[cfg(not(target_os = "linux"))]
mod guard {
    pub fn register(_start: usize, _len: usize) -> Option<usize> {
        None
    }
    pub fn unregister(_i: usize) {}
    pub fn lost(_i: usize) -> bool {
        false
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use std::io::Write;

    fn file_of(pages: usize) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f.bin");
        let mut f = File::create(&p).unwrap();
        let page = 4096 * 4; // a multiple of any page size in use
        for i in 0..pages {
            f.write_all(&vec![(i + 1) as u8; page]).unwrap();
        }
        (dir, p)
    }

    #[test]
    fn a_file_cut_during_a_read_is_an_error_not_a_crash() {
        let (_d, p) = file_of(8);
        let m = unsafe { Mapped::map(File::open(&p).unwrap()) }.unwrap();
        assert!(m.slot.is_some(), "not guarded");
        let len = m.len();
        // The cut lands between the check before the read and the read.
        let r = m.read(|bytes| {
            File::options()
                .write(true)
                .open(&p)
                .unwrap()
                .set_len(4096 * 4)
                .unwrap();
            bytes.iter().map(|&b| b as u64).sum::<u64>()
        });
        let e = r.unwrap_err();
        assert!(e.contains("shrank") && e.contains(&len.to_string()), "{e}");
        // Only the lost pages read as zeros; the first is the file's.
        assert_eq!(m.bytes()[0], 1);
        assert_eq!(m.bytes()[len - 1], 0);
        assert!(guard::lost(m.slot.unwrap()));
    }

    #[test]
    fn a_lost_page_is_an_error_even_once_the_file_has_its_size_again() {
        let (_d, p) = file_of(4);
        let m = unsafe { Mapped::map(File::open(&p).unwrap()) }.unwrap();
        let f = File::options().write(true).open(&p).unwrap();
        f.set_len(0).unwrap();
        let last = m.bytes()[m.len() - 1];
        assert_eq!(last, 0);
        f.set_len(m.len() as u64).unwrap();
        let e = m.read(|b| b[0]).unwrap_err();
        assert!(e.contains("cut from the file"), "{e}");
    }

    #[test]
    fn released_pages_read_the_file_again() {
        let (_d, p) = file_of(4);
        let m = unsafe { Mapped::map(File::open(&p).unwrap()) }.unwrap();
        let sum = |m: &Mapped| m.bytes().iter().map(|&b| b as u64).sum::<u64>();
        let before = sum(&m);
        m.release(&m.bytes()[100..m.len() - 100]);
        m.release(&[1u8, 2, 3]); // not of this map: nothing happens
        assert_eq!(sum(&m), before);
        assert_eq!(m.check(), None);
    }

    #[test]
    fn an_intact_file_reads() {
        let (_d, p) = file_of(2);
        let m = unsafe { Mapped::map(File::open(&p).unwrap()) }.unwrap();
        assert_eq!(m.read(|b| b[b.len() - 1]).unwrap(), 2);
        assert_eq!(m.check(), None);
    }

    /// Run by the next test in a child process: a fault in a map that is
    /// not registered, with the handler installed.
    #[test]
    #[ignore = "run by a_fault_outside_every_guarded_map_still_kills_the_process"]
    fn child_reads_past_the_end_of_an_unguarded_map() {
        let (_d, p) = file_of(4);
        let guarded = unsafe { Mapped::map(File::open(&p).unwrap()) }.unwrap();
        assert!(guarded.slot.is_some());
        let (_d2, q) = file_of(4);
        let plain = unsafe { Mmap::map(&File::open(&q).unwrap()) }.unwrap();
        File::options()
            .write(true)
            .open(&q)
            .unwrap()
            .set_len(0)
            .unwrap();
        let last = std::hint::black_box(plain[plain.len() - 1]);
        println!("read {last} from a lost page");
    }

    #[test]
    fn a_fault_outside_every_guarded_map_still_kills_the_process() {
        use std::os::unix::process::ExitStatusExt;
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "mapped::tests::child_reads_past_the_end_of_an_unguarded_map",
                "--ignored",
                "--nocapture",
            ])
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            out.status.signal(),
            Some(libc::SIGBUS),
            "{:?}: {stdout}",
            out.status
        );
        assert!(!stdout.contains("from a lost page"), "{stdout}");
    }
}

//! Response bodies served from files that are never changed in place once written: key-value
//! record files (written under a temporary name, renamed into place, never opened for writing
//! again; a replaced or deleted record's file is unlinked, never truncated) and job logs (only
//! ever appended to, so their first `len` bytes stay as they are).
//!
//! The file is sent in chunks of up to [`CHUNK`] bytes, each memory-mapped and handed to the
//! connection as [`Bytes`] that own the mapping: the socket write copies straight from the page
//! cache (no read into a buffer), and a chunk whose pages are all cached is mapped right on the
//! runtime thread (a few syscalls, no hop to the blocking pool). Pages not cached are read in
//! on the blocking pool first. The mapping goes when the connection is done with the chunk, so
//! a response holds at most a few chunks, however large the file.
//!
//! Why this cannot fault: a chunk is mapped only within the file's length at the time of the
//! request (a mapped page past the end of the file would raise SIGBUS), the files are never
//! truncated by troupe (an unlinked file stays readable through the mapping), and every page is
//! faulted in by `MADV_POPULATE_READ` before the chunk is handed on, which reports a read error
//! as an error instead of a signal. Where mapping or populating fails (a kernel before 5.14, a
//! file system without mmap), the chunk is read into a buffer on the blocking pool instead.
//! Files in the data dir must not be truncated by anyone else while the server runs.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use axum::body::Body;
use bytes::Bytes;

/// Bytes per mapped chunk (a multiple of the page size: chunk offsets must be page-aligned).
pub const CHUNK: usize = 1 << 20;

/// The first `len` bytes of `file` (fewer if the file is shorter) as a response body.
pub fn file_body(file: File, len: u64) -> Body {
    let len = match file.metadata() {
        Ok(meta) => len.min(meta.len()),
        Err(_) => 0,
    };
    if len == 0 {
        return Body::empty();
    }
    let file = Arc::new(file);
    Body::from_stream(futures::stream::try_unfold(0u64, move |offset| {
        let file = file.clone();
        async move {
            if offset >= len {
                return Ok(None);
            }
            let n = (len - offset).min(CHUNK as u64) as usize;
            let chunk = read_chunk(file, offset, n).await?;
            Ok::<_, io::Error>(Some((chunk, offset + n as u64)))
        }
    }))
}

/// `n` bytes of `file` at `offset` (page-aligned): mapped when possible, else read.
async fn read_chunk(file: Arc<File>, offset: u64, n: usize) -> io::Result<Bytes> {
    if let Ok(map) = Mapping::new(&file, offset, n) {
        if map.resident() {
            if map.populate().is_ok() {
                return Ok(Bytes::from_owner(map));
            }
        } else if let Ok(Ok(map)) =
            tokio::task::spawn_blocking(move || map.populate().map(|()| map)).await
        {
            return Ok(Bytes::from_owner(map));
        }
    }
    tokio::task::spawn_blocking(move || {
        let mut buf = vec![0u8; n];
        file.read_exact_at(&mut buf, offset)?;
        Ok(Bytes::from(buf))
    })
    .await
    .map_err(io::Error::other)?
}

/// A read-only shared mapping of part of a file, unmapped on drop.
struct Mapping {
    ptr: *mut libc::c_void,
    len: usize,
}

// SAFETY: the mapping is read-only memory owned by this value alone; reading it from any thread
// is fine, and it is unmapped exactly once (on drop).
unsafe impl Send for Mapping {}
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Maps `len` (> 0) bytes of `file` at `offset` (page-aligned), which must lie within the
    /// file.
    fn new(file: &File, offset: u64, len: usize) -> io::Result<Self> {
        let offset = libc::off_t::try_from(offset).map_err(io::Error::other)?;
        // SAFETY: a new mapping at an address of the kernel's choice; nothing else is touched.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                offset,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Self { ptr, len })
    }

    /// Whether every page of the mapping is in the page cache (so populating it does no I/O).
    fn resident(&self) -> bool {
        const PAGES: usize = CHUNK / 4096;
        let mut pages = [0u8; PAGES];
        let page = page_size();
        let count = self.len.div_ceil(page);
        if count > PAGES {
            return false;
        }
        // SAFETY: `ptr..ptr+len` is our mapping, and `pages` has room for one byte per page.
        let rc = unsafe { libc::mincore(self.ptr, self.len, pages.as_mut_ptr()) };
        rc == 0 && pages[..count].iter().all(|p| p & 1 == 1)
    }

    /// Faults every page in (reading what is not cached); an I/O error is returned, not raised
    /// as SIGBUS.
    fn populate(&self) -> io::Result<()> {
        // SAFETY: advice on our own mapping.
        let rc = unsafe { libc::madvise(self.ptr, self.len, libc::MADV_POPULATE_READ) };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }
}

impl AsRef<[u8]> for Mapping {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: `len` readable bytes at `ptr`, mapped until `self` is dropped; the file is
        // never truncated (module docs), so the pages stay valid.
        unsafe { std::slice::from_raw_parts(self.ptr as *const u8, self.len) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: our mapping, unmapped once; no slice of it outlives `self` (`Bytes` drops
        // its owner only when the last view is gone).
        unsafe {
            libc::munmap(self.ptr, self.len);
        }
    }
}

fn page_size() -> usize {
    static PAGE: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    // SAFETY: sysconf has no preconditions.
    *PAGE.get_or_init(|| match unsafe { libc::sysconf(libc::_SC_PAGESIZE) } {
        size if size > 0 => size as usize,
        _ => 4096,
    })
}

//! Response bodies served from files that are never changed in place once written: key-value
//! record files (written under a temporary name, renamed into place, never opened for writing
//! again; a replaced or deleted record's file is unlinked, never truncated) and job logs (only
//! ever appended to, so their first `len` bytes stay as they are).
//!
//! The file is sent in chunks of up to [`CHUNK`] bytes, each memory-mapped and handed to the
//! connection as [`Bytes`] that own the mapping: the socket write copies straight from the page
//! cache (no read into a buffer). The first chunk is mapped right on the runtime thread when its
//! pages are all cached (a few syscalls, no hop to the blocking pool: a 1 MiB record is sent
//! without one), else on the blocking pool; each further chunk is mapped on the blocking pool
//! while the one before it is being sent (one hop per MiB, off the connection's critical path).
//! A mapping goes when the connection is done with its chunk, so a response holds at most a
//! few chunks, however large the file.
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
    body(file, len, true)
}

/// [`file_body`], or with `map` false the same chunks read into buffers (the fallback when
/// mapping fails; tests take that path on purpose).
fn body(file: File, len: u64, map: bool) -> Body {
    let len = match file.metadata() {
        Ok(meta) => len.min(meta.len()),
        Err(_) => 0,
    };
    if len == 0 {
        return Body::empty();
    }
    let start = Chunks {
        file: Arc::new(file),
        offset: 0,
        len,
        ahead: None,
        map,
    };
    Body::from_stream(futures::stream::try_unfold(start, |mut at| async move {
        if at.offset >= at.len {
            return Ok(None);
        }
        let n = at.chunk_len(at.offset);
        let chunk = match at.ahead.take() {
            Some(ahead) => ahead.await.map_err(io::Error::other)??,
            None => first_chunk(at.file.clone(), at.offset, n, at.map).await?,
        };
        at.offset += n as u64;
        if at.offset < at.len {
            // The next chunk is made ready while this one is sent.
            let (file, offset, n, map) =
                (at.file.clone(), at.offset, at.chunk_len(at.offset), at.map);
            at.ahead = Some(tokio::task::spawn_blocking(move || {
                blocking_chunk(&file, offset, n, map)
            }));
        }
        Ok::<_, io::Error>(Some((chunk, at)))
    }))
}

/// Where a file body is.
struct Chunks {
    file: Arc<File>,
    offset: u64,
    len: u64,
    /// The next chunk, being mapped on the blocking pool.
    ahead: Option<tokio::task::JoinHandle<io::Result<Bytes>>>,
    /// Whether chunks are mapped (else read into buffers).
    map: bool,
}

impl Chunks {
    fn chunk_len(&self, offset: u64) -> usize {
        (self.len - offset).min(CHUNK as u64) as usize
    }
}

/// The first chunk, mapped right here when its pages are cached (no hop; a record of up to
/// [`CHUNK`] bytes is sent without leaving the runtime thread), else on the blocking pool.
async fn first_chunk(file: Arc<File>, offset: u64, n: usize, map: bool) -> io::Result<Bytes> {
    if map {
        if let Ok(map) = Mapping::new(&file, offset, n) {
            if map.resident() && map.populate().is_ok() {
                return Ok(Bytes::from_owner(map));
            }
        }
    }
    tokio::task::spawn_blocking(move || blocking_chunk(&file, offset, n, map))
        .await
        .map_err(io::Error::other)?
}

/// `n` bytes of `file` at `offset` (page-aligned), mapped and read in, or else read into a
/// buffer; may block on I/O.
fn blocking_chunk(file: &File, offset: u64, n: usize, map: bool) -> io::Result<Bytes> {
    if map {
        if let Ok(map) = Mapping::new(file, offset, n) {
            if map.populate().is_ok() {
                return Ok(Bytes::from_owner(map));
            }
        }
    }
    let mut buf = vec![0u8; n];
    file.read_exact_at(&mut buf, offset)?;
    Ok(Bytes::from(buf))
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

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use std::io::Write;

    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[3] ^ seed)
            .collect()
    }

    fn file_with(dir: &std::path::Path, name: &str, data: &[u8]) -> std::path::PathBuf {
        let path = dir.join(name);
        std::fs::File::create(&path)
            .unwrap()
            .write_all(data)
            .unwrap();
        path
    }

    async fn collect(body: Body) -> Vec<u8> {
        body.collect().await.unwrap().to_bytes().to_vec()
    }

    /// Sizes around the chunk size come back byte for byte, in chunks of at most [`CHUNK`],
    /// mapped and through the read fallback alike.
    #[tokio::test]
    async fn files_of_any_size_come_back_whole() {
        let dir = tempfile::tempdir().unwrap();
        for (len, map) in [0, 1, 4095, 4097, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 5]
            .into_iter()
            .flat_map(|len| [(len, true), (len, false)])
        {
            let data = pattern(len, 7);
            let path = file_with(dir.path(), "f", &data);
            let mut body = body(File::open(&path).unwrap(), len as u64, map);
            let mut got = Vec::new();
            while let Some(frame) = body.frame().await {
                let chunk = frame.unwrap().into_data().unwrap();
                assert!(chunk.len() <= CHUNK && !chunk.is_empty(), "{len}");
                got.extend_from_slice(&chunk);
            }
            assert!(got == data, "{len} bytes, mapped: {map}");
        }
    }

    /// A length beyond the end of the file (a record file shorter than its row says) sends
    /// what the file has: nothing is mapped past its end (that would be SIGBUS on access).
    #[tokio::test]
    async fn a_length_past_the_end_sends_only_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let data = pattern(CHUNK + 100, 1);
        let path = file_with(dir.path(), "f", &data);
        for map in [true, false] {
            let got = collect(body(File::open(&path).unwrap(), 4 * CHUNK as u64, map)).await;
            assert!(got == data, "mapped: {map}");
        }
        // And a shorter length sends only that much.
        let got = collect(file_body(File::open(&path).unwrap(), 10)).await;
        assert_eq!(got, &data[..10]);
    }

    /// A file unlinked and replaced by another of the same name while its body is being sent
    /// (what an overwritten or deleted record's file goes through) still sends its own bytes.
    #[tokio::test]
    async fn an_unlinked_file_still_sends_its_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let old = pattern(3 * CHUNK + 17, 2);
        for map in [true, false] {
            let path = file_with(dir.path(), "f", &old);
            let mut body = body(File::open(&path).unwrap(), old.len() as u64, map);
            let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
            std::fs::remove_file(&path).unwrap();
            file_with(dir.path(), "f", &pattern(100, 3));
            let mut got = first.to_vec();
            got.extend(collect(body).await);
            assert!(got == old, "mapped: {map}");
        }
    }

    /// Pages not in the page cache are read in (off the runtime thread) before they are sent.
    #[tokio::test]
    async fn pages_not_cached_are_read_in() {
        use std::os::fd::AsRawFd;
        let dir = tempfile::tempdir().unwrap();
        let data = pattern(2 * CHUNK + 3, 4);
        let path = file_with(dir.path(), "f", &data);
        let file = File::open(&path).unwrap();
        file.sync_all().unwrap();
        // SAFETY: advice on our own descriptor.
        unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        let got = collect(file_body(file, data.len() as u64)).await;
        assert!(got == data);
    }
}

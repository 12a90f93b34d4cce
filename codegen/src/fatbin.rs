//! Reading the table of contents of a CUDA fatbin: which images (SASS for an `sm_XX`, PTX for
//! a `compute_XX`) it holds, and whether each one defines a given kernel.
//!
//! nvcc builds the fatbin (see `nvcc.rs`); this module checks the result, so that a fatbin
//! that lacks a kernel for some architecture is caught at build time rather than as a
//! "named symbol not found" on a user's GPU. The container format is NVIDIA's and not
//! formally documented, but it has been stable since CUDA 4 and is what `cuobjdump` reads:
//! a 16-byte header (magic `0xBA55ED50`, version, header size, size of the entries), then
//! entries, each a header (kind, header size, payload size, architecture, flags, ...) and
//! its payload.

/// Magic number at the start of every fatbin container.
const MAGIC: u32 = 0xBA55_ED50;
/// Entry flags that mark a compressed payload (the older LZ4-style scheme and zstd).
const COMPRESSED_FLAGS: u64 = 0x2000 | 0x8000;

/// What kind of code an image holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageKind {
    /// PTX for a virtual architecture, compiled by the driver at load time.
    Ptx,
    /// SASS (an ELF cubin) for one real architecture.
    Sass,
    /// Another kind (the number NVIDIA's header gives).
    Other(u16),
}

/// One image of a fatbin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Image<'a> {
    /// PTX or SASS.
    pub kind: ImageKind,
    /// Compute capability times ten, e.g. 90.
    pub arch: u32,
    /// Whether the payload is compressed (then its kernel names cannot be read).
    pub compressed: bool,
    /// The payload: an ELF cubin, PTX text or compressed bytes.
    pub payload: &'a [u8],
}

impl Image<'_> {
    /// The target the image serves, as nvcc spells it: `sm_90` or `compute_90`.
    pub fn target(&self) -> String {
        match self.kind {
            ImageKind::Ptx => format!("compute_{}", self.arch),
            ImageKind::Sass => format!("sm_{}", self.arch),
            ImageKind::Other(kind) => format!("kind{kind}_{}", self.arch),
        }
    }

    /// Whether the image defines the `extern "C"` kernel `name`: a `.text.<name>` section in
    /// a cubin, an `.entry <name>(` in PTX. `None` when the payload is compressed or of
    /// another kind.
    pub fn defines(&self, name: &str) -> Option<bool> {
        if self.compressed {
            return None;
        }
        let needle = match self.kind {
            ImageKind::Sass => format!(".text.{name}\0"),
            ImageKind::Ptx => format!(".entry {name}("),
            ImageKind::Other(_) => return None,
        };
        Some(
            self.payload
                .windows(needle.len())
                .any(|w| w == needle.as_bytes()),
        )
    }
}

/// The fatbin is not in the format this module reads.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a readable fatbin: {0}")]
pub struct FatbinError(String);

/// Lists the images of a fatbin (one or more containers back to back).
pub fn images(bytes: &[u8]) -> Result<Vec<Image<'_>>, FatbinError> {
    let bad = |why: String| Err(FatbinError(why));
    let mut images = Vec::new();
    let mut offset = 0;
    while offset < bytes.len() {
        // nvcc pads containers to 8 bytes; trailing zeros are not another container.
        if bytes[offset..].iter().all(|&b| b == 0) {
            break;
        }
        if read_u32(bytes, offset) != Some(MAGIC) {
            return bad(format!("no fatbin magic at byte {offset}"));
        }
        let (Some(header), Some(size)) = (read_u16(bytes, offset + 6), read_u64(bytes, offset + 8))
        else {
            return bad(format!("truncated container header at byte {offset}"));
        };
        let start = offset + usize::from(header);
        let Some(end) = usize::try_from(size)
            .ok()
            .and_then(|s| start.checked_add(s))
            .filter(|&end| end <= bytes.len())
        else {
            return bad(format!("container at byte {offset} runs past the end"));
        };
        let mut entry = start;
        while entry < end {
            let (image, next) = read_entry(bytes, entry, end)?;
            images.push(image);
            entry = next;
        }
        offset = end;
    }
    Ok(images)
}

/// Reads the entry at `at` (which must end by `end`); returns it and the next entry's offset.
fn read_entry(bytes: &[u8], at: usize, end: usize) -> Result<(Image<'_>, usize), FatbinError> {
    let fields = (
        read_u16(bytes, at),
        read_u32(bytes, at + 4),
        read_u64(bytes, at + 8),
        read_u32(bytes, at + 28),
        read_u64(bytes, at + 40),
        read_u64(bytes, at + 56),
    );
    let (Some(kind), Some(header), Some(size), Some(arch), Some(flags), Some(inflated)) = fields
    else {
        return Err(FatbinError(format!("truncated entry header at byte {at}")));
    };
    let payload_start = usize::try_from(header).ok().and_then(|h| at.checked_add(h));
    let payload_end = payload_start
        .zip(usize::try_from(size).ok())
        .and_then(|(s, n)| s.checked_add(n))
        .filter(|&e| e <= end);
    let (Some(payload_start), Some(payload_end)) = (payload_start, payload_end) else {
        return Err(FatbinError(format!(
            "entry at byte {at} runs past its container"
        )));
    };
    let kind = match kind {
        1 => ImageKind::Ptx,
        2 => ImageKind::Sass,
        other => ImageKind::Other(other),
    };
    let image = Image {
        kind,
        arch,
        compressed: flags & COMPRESSED_FLAGS != 0 || inflated != 0,
        payload: &bytes[payload_start..payload_end],
    };
    Ok((image, payload_end))
}

fn read_u16(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(bytes.get(at..at + 2)?.try_into().ok()?))
}

fn read_u32(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

fn read_u64(bytes: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(bytes.get(at..at + 8)?.try_into().ok()?))
}

/// Checks that `bytes` holds an image for each of `targets` (`sm_90`, `compute_90`, ...) and
/// that every such image defines every kernel of `kernels`. Returns one line per problem;
/// empty means complete.
pub fn missing(
    bytes: &[u8],
    targets: &[impl AsRef<str>],
    kernels: &[impl AsRef<str>],
) -> Result<Vec<String>, FatbinError> {
    let images = images(bytes)?;
    let mut problems = Vec::new();
    for target in targets.iter().map(AsRef::as_ref) {
        let Some(image) = images.iter().find(|i| i.target() == target) else {
            problems.push(format!("no {target} image"));
            continue;
        };
        for kernel in kernels.iter().map(AsRef::as_ref) {
            match image.defines(kernel) {
                Some(true) => {}
                Some(false) => problems.push(format!("{target} image lacks `{kernel}`")),
                None => problems.push(format!("{target} image is compressed, cannot check")),
            }
        }
    }
    Ok(problems)
}

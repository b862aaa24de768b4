//! Streaming digests for HASH, RANG and the X* commands (SHA-256, SHA-512, SHA-1, MD5, CRC32).

use std::io::{self, Read, Seek, SeekFrom};

use ferry_proto::ftp::command::HashAlgo;
use sha2::Digest as _;

/// An in-progress digest of one algorithm.
pub enum Digester {
    /// SHA-256.
    Sha256(sha2::Sha256),
    /// SHA-512.
    Sha512(sha2::Sha512),
    /// SHA-1.
    Sha1(sha1::Sha1),
    /// MD5.
    Md5(md5::Md5),
    /// CRC32.
    Crc32(crc32fast::Hasher),
}

impl Digester {
    /// A fresh digest of `algo`.
    pub fn new(algo: HashAlgo) -> Digester {
        match algo {
            HashAlgo::Sha256 => Digester::Sha256(sha2::Sha256::new()),
            HashAlgo::Sha512 => Digester::Sha512(sha2::Sha512::new()),
            HashAlgo::Sha1 => Digester::Sha1(sha1::Sha1::new()),
            HashAlgo::Md5 => Digester::Md5(md5::Md5::new()),
            HashAlgo::Crc32 => Digester::Crc32(crc32fast::Hasher::new()),
        }
    }

    /// Feeds bytes.
    pub fn update(&mut self, data: &[u8]) {
        match self {
            Digester::Sha256(h) => h.update(data),
            Digester::Sha512(h) => h.update(data),
            Digester::Sha1(h) => h.update(data),
            Digester::Md5(h) => h.update(data),
            Digester::Crc32(h) => h.update(data),
        }
    }

    /// The digest as lowercase hex.
    pub fn finish_hex(self) -> String {
        match self {
            Digester::Sha256(h) => hex::encode(h.finalize()),
            Digester::Sha512(h) => hex::encode(h.finalize()),
            Digester::Sha1(h) => hex::encode(h.finalize()),
            Digester::Md5(h) => hex::encode(h.finalize()),
            Digester::Crc32(h) => format!("{:08x}", h.finalize()),
        }
    }
}

/// Hashes bytes `start..end` (end exclusive) of `file`; blocking.
pub fn hash_range(
    file: &mut std::fs::File,
    algo: HashAlgo,
    start: u64,
    end: u64,
) -> io::Result<String> {
    let mut digest = Digester::new(algo);
    file.seek(SeekFrom::Start(start))?;
    let mut remaining = end.saturating_sub(start);
    let mut buf = vec![0u8; 256 * 1024];
    while remaining > 0 {
        let want = buf
            .len()
            .min(usize::try_from(remaining).unwrap_or(usize::MAX));
        let n = file.read(&mut buf[..want])?;
        if n == 0 {
            break;
        }
        digest.update(&buf[..n]);
        remaining -= n as u64;
    }
    Ok(digest.finish_hex())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn known_vectors_of_every_algorithm() {
        let cases = [
            (
                HashAlgo::Sha256,
                "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
            ),
            (HashAlgo::Sha1, "a9993e364706816aba3e25717850c26c9cd0d89d"),
            (HashAlgo::Md5, "900150983cd24fb0d6963f7d28e17f72"),
            (HashAlgo::Crc32, "352441c2"),
        ];
        for (algo, want) in cases {
            let mut d = Digester::new(algo);
            d.update(b"abc");
            assert_eq!(d.finish_hex(), want, "{algo:?}");
        }
    }

    #[test]
    fn range_hash_covers_only_the_range() {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(b"xxabcyy").unwrap();
        let h = hash_range(&mut f, HashAlgo::Md5, 2, 5).unwrap();
        assert_eq!(h, "900150983cd24fb0d6963f7d28e17f72");
    }
}

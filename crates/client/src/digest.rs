//! Local digests, computed while bytes stream, in the algorithms FTP servers offer (HASH:
//! SHA-256, SHA-512, SHA-1, MD5, CRC32), and of local files (a partial file's prefix before a
//! resume is checked against the server's `RANG` + `HASH`).

use std::path::Path;

use ferry_proto::ftp::command::HashAlgo;
use sha2::Digest as _;
use tokio::io::AsyncReadExt as _;

use crate::error::{Error, Result};

/// A running digest.
#[derive(Debug, Clone)]
pub enum Hasher {
    /// SHA-256.
    Sha256(sha2::Sha256),
    /// SHA-512.
    Sha512(sha2::Sha512),
    /// SHA-1.
    Sha1(sha1::Sha1),
    /// MD5.
    Md5(md5::Md5),
    /// CRC32 (IEEE).
    Crc32(crc32fast::Hasher),
}

impl Hasher {
    /// A fresh digest of `algo`.
    pub fn new(algo: HashAlgo) -> Hasher {
        match algo {
            HashAlgo::Sha256 => Hasher::Sha256(sha2::Sha256::new()),
            HashAlgo::Sha512 => Hasher::Sha512(sha2::Sha512::new()),
            HashAlgo::Sha1 => Hasher::Sha1(sha1::Sha1::new()),
            HashAlgo::Md5 => Hasher::Md5(md5::Md5::new()),
            HashAlgo::Crc32 => Hasher::Crc32(crc32fast::Hasher::new()),
        }
    }

    /// The algorithm.
    pub fn algo(&self) -> HashAlgo {
        match self {
            Hasher::Sha256(_) => HashAlgo::Sha256,
            Hasher::Sha512(_) => HashAlgo::Sha512,
            Hasher::Sha1(_) => HashAlgo::Sha1,
            Hasher::Md5(_) => HashAlgo::Md5,
            Hasher::Crc32(_) => HashAlgo::Crc32,
        }
    }

    /// Adds bytes.
    pub fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(data),
            Hasher::Sha512(h) => h.update(data),
            Hasher::Sha1(h) => h.update(data),
            Hasher::Md5(h) => h.update(data),
            Hasher::Crc32(h) => h.update(data),
        }
    }

    /// The digest as lower-case hex (CRC32: 8 digits).
    pub fn finish_hex(self) -> String {
        match self {
            Hasher::Sha256(h) => hex::encode(h.finalize()),
            Hasher::Sha512(h) => hex::encode(h.finalize()),
            Hasher::Sha1(h) => hex::encode(h.finalize()),
            Hasher::Md5(h) => hex::encode(h.finalize()),
            Hasher::Crc32(h) => format!("{:08x}", h.finalize()),
        }
    }
}

/// Length in hex digits of a digest of `algo`.
pub fn hex_len(algo: HashAlgo) -> usize {
    match algo {
        HashAlgo::Sha256 => 64,
        HashAlgo::Sha512 => 128,
        HashAlgo::Sha1 => 40,
        HashAlgo::Md5 => 32,
        HashAlgo::Crc32 => 8,
    }
}

/// Feeds the first `len` bytes of the file at `path` into `hasher`. Fails if the file is shorter.
pub async fn hash_file_prefix(path: &Path, len: u64, hasher: &mut Hasher) -> Result<()> {
    let mut file = tokio::fs::File::open(path)
        .await
        .map_err(|e| Error::local(path, &e))?;
    let mut buf = vec![0u8; 256 * 1024];
    let mut left = len;
    while left > 0 {
        let want = usize::try_from(left.min(buf.len() as u64)).unwrap_or(buf.len());
        let n = file
            .read(&mut buf[..want])
            .await
            .map_err(|e| Error::local(path, &e))?;
        if n == 0 {
            return Err(Error::Local(format!(
                "{}: shorter than {len} bytes",
                path.display()
            )));
        }
        hasher.update(&buf[..n]);
        left -= n as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_vectors() {
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
            let mut h = Hasher::new(algo);
            h.update(b"a");
            h.update(b"bc");
            assert_eq!(h.algo(), algo);
            let hex = h.finish_hex();
            assert_eq!(hex, want, "{algo:?}");
            assert_eq!(hex.len(), hex_len(algo));
        }
    }

    #[tokio::test]
    async fn prefix_of_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"abcdef").unwrap();
        let mut h = Hasher::new(HashAlgo::Sha256);
        hash_file_prefix(&p, 3, &mut h).await.unwrap();
        let mut want = Hasher::new(HashAlgo::Sha256);
        want.update(b"abc");
        assert_eq!(h.finish_hex(), want.finish_hex());
        let mut h = Hasher::new(HashAlgo::Sha256);
        assert!(hash_file_prefix(&p, 7, &mut h).await.is_err());
    }
}

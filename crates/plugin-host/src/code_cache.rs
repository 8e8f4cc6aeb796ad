//! Compiled plugin code kept on disk, so that a restart or a reload with
//! unchanged `.wasm` files does not run Cranelift again (seconds per start
//! in a debug build).
//!
//! This is wasmtime's own cache (its `cache` feature), given a directory of
//! ours. Wasmtime keys each entry by a SHA-256 of the wasm bytes together
//! with everything of the engine that shapes the code (target, Cranelift
//! flags, tunables, wasm features, wasmtime version), so a changed module
//! or engine setting can only miss, never load stale code. An entry that
//! does not decompress or that wasmtime refuses to load is compiled again
//! and overwritten; writes go to a temporary file and are renamed into
//! place, so a crash leaves no torn entry.
//!
//! The cache is an optimisation only: a directory that cannot be made or
//! written costs a warning and a compilation, never a load.
//!
//! Anyone who can write to the directory can run code in the server (the
//! entries are machine code that wasmtime maps executable after checking
//! only their headers), so it is made mode 0700 and one that group or
//! others may write to is not used.

use std::fmt;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use wasmtime::{Cache, CacheConfig, Engine, Module};

/// What the code cache did since the host was loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CodeCacheStats {
    /// Modules whose code came from the cache: no compilation.
    pub hits: u64,
    /// Modules compiled (no entry, or one that could not be used).
    pub compiled: u64,
    /// Compiled modules whose code was written to the cache.
    pub stored: u64,
}

pub(crate) struct CodeCache {
    cache: Cache,
    dir: PathBuf,
    // Wasmtime only counts hits and stores per `Cache`; holding this across
    // a compilation makes its counters' change that module's alone when two
    // reloads overlap.
    compiling: Mutex<()>,
    compiled: AtomicU64,
}

impl CodeCache {
    /// Opens (making it if need be) the cache in `dir`; on any failure logs
    /// a warning and returns `None`, and plugins are compiled at every load.
    pub fn open(dir: &Path) -> Option<CodeCache> {
        match Self::try_open(dir) {
            Ok(cache) => Some(cache),
            Err(why) => {
                tracing::warn!(
                    dir = %dir.display(),
                    "plugin code cache not used ({why}): plugins are compiled at every load"
                );
                None
            }
        }
    }

    fn try_open(dir: &Path) -> Result<CodeCache, String> {
        // Wasmtime wants an absolute path; a relative spool directory is
        // relative to where the server started.
        let dir = std::path::absolute(dir).map_err(|e| e.to_string())?;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|e| format!("cannot create it: {e}"))?;
        let mode = std::fs::metadata(&dir)
            .map_err(|e| e.to_string())?
            .permissions()
            .mode();
        if mode & 0o022 != 0 {
            return Err(format!(
                "mode {:o} lets group or others write to it",
                mode & 0o777
            ));
        }
        let mut config = CacheConfig::new();
        config.with_directory(&dir);
        let cache = Cache::new(config).map_err(|e| format!("{e:#}"))?;
        Ok(CodeCache {
            cache,
            dir,
            compiling: Mutex::new(()),
            compiled: AtomicU64::new(0),
        })
    }

    /// For the engine's [`wasmtime::Config::cache`].
    pub fn wasmtime_cache(&self) -> Cache {
        self.cache.clone()
    }

    /// [`Module::new`] on an engine configured with [`Self::wasmtime_cache`],
    /// saying in the log where the code came from.
    pub fn module(&self, engine: &Engine, wasm: &[u8], plugin: &str) -> wasmtime::Result<Module> {
        let _one_at_a_time = self.compiling.lock().unwrap_or_else(|p| p.into_inner());
        let (hits, stored) = (self.cache.cache_hits(), self.cache.cache_misses());
        let started = Instant::now();
        let module = Module::new(engine, wasm)?;
        let ms = started.elapsed().as_millis() as u64;
        if self.cache.cache_hits() > hits {
            tracing::info!(plugin, ms, "plugin code loaded from the cache");
        } else {
            self.compiled.fetch_add(1, Ordering::Relaxed);
            if self.cache.cache_misses() > stored {
                tracing::info!(plugin, ms, "plugin compiled; code cached");
            } else {
                tracing::warn!(
                    plugin,
                    ms,
                    dir = %self.dir.display(),
                    "plugin compiled, but its code could not be written to the cache"
                );
            }
        }
        Ok(module)
    }

    pub fn stats(&self) -> CodeCacheStats {
        CodeCacheStats {
            hits: self.cache.cache_hits() as u64,
            compiled: self.compiled.load(Ordering::Relaxed),
            stored: self.cache.cache_misses() as u64,
        }
    }
}

impl fmt::Debug for CodeCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CodeCache")
            .field("dir", &self.dir)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

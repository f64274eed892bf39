//! The state of the example services: a counter kept in the data dir, as
//! an append-only log of counts, one line each, each made durable before it
//! is acknowledged. Included by `http_server.rs` and `http_server_tokio.rs`.
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::Path;
use std::sync::Mutex;

/// The service's state: an append-only log of counts, one line each.
pub struct Counter {
    /// The log, its last count, and whether it is sealed (no more writes).
    log: Mutex<(File, u64, bool)>,
}

impl Counter {
    /// Open the log in `data_dir`. Only while holding the data-dir flock.
    pub fn open(data_dir: &Path) -> std::io::Result<Self> {
        let mut file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(data_dir.join("counter.log"))?;
        let mut text = String::new();
        file.read_to_string(&mut text)?;
        if text.is_empty() {
            // A log just created needs its name to be durable too.
            File::open(data_dir)?.sync_all()?;
        }
        let count = text.lines().count() as u64;
        Ok(Self {
            log: Mutex::new((file, count, false)),
        })
    }

    /// Add one, durably, and return the new count.
    pub fn increment(&self) -> std::io::Result<u64> {
        let mut log = self.log.lock().unwrap();
        let (file, count, sealed) = &mut *log;
        if *sealed {
            return Err(std::io::Error::other("sealed for a handoff"));
        }
        // One write(2) of the whole line: a process killed between two
        // writes would leave half a line for the next append to run into.
        file.write_all(format!("{}\n", *count + 1).as_bytes())?;
        file.sync_data()?; // durable before it is acknowledged
        *count += 1;
        Ok(*count)
    }

    pub fn count(&self) -> u64 {
        self.log.lock().unwrap().1
    }

    /// Stop writing (`true`) or write again (`false`, after an abort).
    pub fn set_sealed(&self, sealed: bool) -> u64 {
        let mut log = self.log.lock().unwrap();
        log.2 = sealed;
        log.1
    }
}

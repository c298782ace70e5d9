//! Child processes a test starts (the gateway binary, a bus, a keyring daemon).

use std::process::Child;

/// A child process that is killed and reaped when dropped, so a test that fails half-way leaves
/// nothing running behind it.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

//! Test support for the examples (not part of the toolkit): start an
//! example's binary as a user would, on a free loopback port, wait until it
//! says it listens, and stop it when the test ends.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// A running example. Killed when dropped.
pub struct Running {
    child: Child,
    /// `http://127.0.0.1:PORT`
    pub base: String,
    /// Every line it printed so far is in here after [`Running::output`].
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Running {
    /// Starts `binary` with `BIND=127.0.0.1:0` and `envs`, and waits (at
    /// most 60 s) for the line `listening on http://ADDR`.
    pub fn start(binary: &str, envs: &[(&str, &str)]) -> Self {
        let mut command = Command::new(binary);
        command
            .env("BIND", "127.0.0.1:0")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (key, value) in envs {
            command.env(key, value);
        }
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {binary}: {e}"));
        let stdout = child.stdout.take().unwrap_or_else(|| panic!("no stdout"));
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                println!("[example] {line}");
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut running = Self {
            child,
            base: String::new(),
            lines,
            seen: Vec::new(),
        };
        loop {
            match running.lines.recv_timeout(Duration::from_secs(60)) {
                Ok(line) => {
                    let found = line
                        .split_once("listening on ")
                        .map(|(_, rest)| rest.split_whitespace().next().unwrap_or("").to_owned());
                    running.seen.push(line);
                    if let Some(base) = found {
                        running.base = base;
                        return running;
                    }
                }
                Err(_) => panic!(
                    "{binary} did not print `listening on http://…` within 60 s; it printed: {:?}",
                    running.seen
                ),
            }
        }
    }

    /// `base` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Everything printed on stdout so far.
    pub fn output(&mut self) -> &[String] {
        while let Ok(line) = self.lines.try_recv() {
            self.seen.push(line);
        }
        &self.seen
    }

    /// Waits (at most `timeout`) for a stdout line containing `needle`.
    pub fn wait_for_line(&mut self, needle: &str, timeout: Duration) -> String {
        if let Some(line) = self.output().iter().find(|l| l.contains(needle)) {
            return line.clone();
        }
        let deadline = std::time::Instant::now() + timeout;
        while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => break,
            }
        }
        panic!("no line containing {needle:?}; printed: {:?}", self.seen)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTP client for the tests (no proxy, 10 s timeout).
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap_or_else(|e| panic!("http client: {e}"))
}

pub use reqwest;

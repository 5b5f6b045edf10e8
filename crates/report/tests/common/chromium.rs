//! Headless Chromium for the report's tests (and the CLI's demo-run report test, which
//! includes this file by path): start it on a `file://` page with a hard time limit, read its
//! console messages and the page's own error recorder, and judge a screenshot.
//!
//! Every Chromium process is killed after [`LIMIT`] at the latest, so a test cannot hang. A
//! missing browser fails the test (it never skips), naming the remedy.

#![allow(dead_code)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub const LIMIT: Duration = Duration::from_secs(60);

pub fn chromium() -> PathBuf {
    let bin = std::env::var_os("COORDEXP_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    assert!(
        bin.exists(),
        "no Chromium at {} — run scripts/setup.sh (it installs Debian's `chromium`) or set COORDEXP_CHROMIUM",
        bin.display()
    );
    bin
}

/// Run Chromium headless on `url` with `extra` flags; (stdout, stderr). Killed after [`LIMIT`].
pub fn run_chromium(profile: &Path, url: &str, extra: &[String]) -> (String, String) {
    let mut cmd = Command::new(chromium());
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-extensions",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
        "--enable-logging=stderr",
        "--v=0",
        "--timeout=15000",
    ])
    .arg(format!("--user-data-dir={}", profile.display()))
    .args(extra)
    .arg(url)
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("start chromium");
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for chromium") {
            break Some(status);
        }
        if start.elapsed() > LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let (stdout, stderr) = (out_t.join().unwrap(), err_t.join().unwrap());
    let status = status.unwrap_or_else(|| panic!("chromium ran past {LIMIT:?}; stderr:\n{stderr}"));
    assert!(status.success(), "chromium failed ({status}); stderr:\n{stderr}");
    (stdout, stderr)
}

/// Every console message of the page: the report logs nothing, so any message — an uncaught
/// exception, `console.error`, an SVG attribute error, a Content-Security-Policy block of a
/// resource that was not embedded — is a defect.
pub fn console_messages(stderr: &str) -> Vec<&str> {
    stderr.lines().filter(|l| l.contains(":CONSOLE")).collect()
}

/// The page's own error recorder, from the dumped DOM: `None` when the attribute is missing.
pub fn recorded_script_errors(dom: &str) -> Option<&str> {
    let start = dom.find("data-js-errors=\"")? + "data-js-errors=\"".len();
    Some(&dom[start..start + dom[start..].find('"')?])
}

/// A screenshot's (distinct colours, share of non-white pixels), asserting that it is not
/// blank: over 5 % of the page not white and over 500 colours.
pub fn judge_screenshot(shot: &Path) -> (usize, f64) {
    let img = image::open(shot).expect("a PNG screenshot").to_rgb8();
    let total = img.pixels().len();
    let non_white = img.pixels().filter(|p| p.0.iter().any(|&c| c < 235)).count();
    let mut colours: Vec<[u8; 3]> = img.pixels().map(|p| p.0).collect();
    colours.sort_unstable();
    colours.dedup();
    assert!(non_white * 20 > total, "under 5% of the page is not white: {non_white}/{total}");
    assert!(colours.len() > 500, "only {} distinct colours", colours.len());
    (colours.len(), non_white as f64 / total as f64)
}

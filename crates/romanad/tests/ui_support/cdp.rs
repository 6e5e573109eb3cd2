//! A headless Chromium (Debian's `chromium`) driven over the DevTools protocol: the process
//! guard (killed and its profile removed on drop, even when the test fails) and a small
//! blocking client of one page (commands by id, events kept for the test to read).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

/// The browser binary, or `None` (the test then skips, saying so).
pub fn chromium() -> Option<PathBuf> {
    ["chromium", "chromium-browser"].iter().find_map(|name| {
        std::env::var_os("PATH")?.to_str()?.split(':').map(|d| Path::new(d).join(name)).find(|p| p.is_file())
    })
}

pub struct Browser {
    child: Child,
    profile: PathBuf,
    pub port: u16,
}

impl Browser {
    /// Starts Chromium headless on a DevTools port the kernel picks, with a fresh profile, no
    /// first-run work and every host name but 127.0.0.1 unresolvable, so nothing is fetched from
    /// the internet whatever a page asks for.
    pub fn start(bin: &Path, profile: PathBuf) -> Browser {
        std::fs::create_dir_all(&profile).expect("profile directory");
        let child = Command::new(bin)
            .args([
                "--headless",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
                "--no-sandbox", // tests run as root, where Chromium's sandbox refuses to start
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-extensions",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-features=Translate,OptimizationHints,MediaRouter",
                "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
                "--window-size=1400,1000",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromium starts");
        let mut b = Browser { child, profile, port: 0 };
        // Chromium writes the port it bound to into the profile.
        let file = b.profile.join("DevToolsActivePort");
        let deadline = Instant::now() + Duration::from_secs(60);
        while b.port == 0 {
            if let Ok(text) = std::fs::read_to_string(&file)
                && let Some(p) = text.lines().next().and_then(|l| l.trim().parse().ok())
            {
                b.port = p;
                break;
            }
            if let Ok(Some(status)) = b.child.try_wait() {
                panic!("chromium exited before opening its DevTools port: {status}");
            }
            assert!(Instant::now() < deadline, "chromium wrote no {} in 60 s", file.display());
            std::thread::sleep(Duration::from_millis(100));
        }
        b
    }

    /// The first page's DevTools client.
    pub fn page(&self) -> Page {
        let list = http_get(self.port, "/json/list");
        let targets: Vec<Value> = serde_json::from_str(&list).expect("DevTools target list");
        let ws = targets
            .iter()
            .find(|t| t["type"] == "page")
            .and_then(|t| t["webSocketDebuggerUrl"].as_str())
            .unwrap_or_else(|| panic!("no page target in {list}"))
            .to_owned();
        let (socket, _) = tungstenite::connect(ws.as_str()).expect("DevTools WebSocket");
        if let MaybeTlsStream::Plain(s) = socket.get_ref() {
            s.set_read_timeout(Some(Duration::from_secs(60))).expect("read timeout");
        }
        Page { socket, next: 0, events: Vec::new() }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// `GET path` on the DevTools HTTP port. Chromium keeps the connection open (and answers
/// HTTP/1.0 with nothing), so the body is read by its Content-Length.
fn http_get(port: u16, path: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("DevTools port");
    s.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
    write!(s, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n").expect("request");
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16384];
    loop {
        let text = String::from_utf8_lossy(&buf).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len = head
                .lines()
                .find_map(|l| l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case("content-length")))
                .and_then(|(_, v)| v.trim().parse::<usize>().ok())
                .unwrap_or_else(|| panic!("no Content-Length in {head}"));
            if body.len() >= len {
                return body[..len].to_owned();
            }
        }
        let n = s.read(&mut chunk).expect("DevTools answers");
        assert!(n > 0, "DevTools closed the connection after {} bytes", buf.len());
        buf.extend_from_slice(&chunk[..n]);
    }
}

pub struct Page {
    socket: WebSocket<MaybeTlsStream<TcpStream>>,
    next: u64,
    /// Every event received so far (`method`, `params`), in order.
    pub events: Vec<Value>,
}

impl Page {
    /// One command; its `result`, or a panic naming the command and the browser's error.
    pub fn call(&mut self, method: &str, params: Value) -> Value {
        self.next += 1;
        let id = self.next;
        let msg = json!({"id": id, "method": method, "params": params}).to_string();
        self.socket.send(Message::text(msg)).unwrap_or_else(|e| panic!("{method}: {e}"));
        loop {
            let m = self.socket.read().unwrap_or_else(|e| panic!("{method}: no answer: {e}"));
            let Message::Text(text) = m else { continue };
            let v: Value = serde_json::from_str(text.as_str()).expect("DevTools sends JSON");
            if v["id"] == id {
                if let Some(e) = v.get("error") {
                    panic!("{method} failed: {e}");
                }
                return v["result"].clone();
            }
            if v.get("method").is_some() {
                self.events.push(v);
            }
        }
    }

    /// The value of a JavaScript expression in the page (promises awaited); a thrown exception
    /// panics with its text.
    pub fn eval(&mut self, expression: &str) -> Value {
        let r = self.call(
            "Runtime.evaluate",
            json!({"expression": expression, "returnByValue": true, "awaitPromise": true}),
        );
        if let Some(e) = r.get("exceptionDetails") {
            panic!("{expression} threw: {e}");
        }
        r["result"]["value"].clone()
    }

    /// Evaluates `expression` until `done` holds for its value; the value, or a panic showing the
    /// last value after 60 s (a deadline for a hung page, not a measure of speed).
    pub fn wait_for(&mut self, what: &str, expression: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let v = self.eval(expression);
            if done(&v) {
                return v;
            }
            assert!(Instant::now() < deadline, "waited 60 s for {what}; the page shows {v}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Loads `url` (a full navigation).
    pub fn navigate(&mut self, url: &str) {
        self.call("Page.navigate", json!({"url": url}));
    }

    /// A PNG of the page as it is now, written to `path`.
    pub fn screenshot(&mut self, path: &Path) {
        let r = self.call("Page.captureScreenshot", json!({"format": "png", "captureBeyondViewport": true}));
        let png = base64_decode(r["data"].as_str().expect("screenshot data"));
        assert!(png.starts_with(b"\x89PNG"), "a PNG");
        std::fs::create_dir_all(path.parent().expect("a directory")).expect("screenshot directory");
        std::fs::write(path, png).expect("write screenshot");
    }
}

/// Standard base64 with padding (what DevTools sends); the test needs nothing more.
fn base64_decode(text: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {c}"),
    };
    let bytes: Vec<u8> = text.bytes().filter(|&c| c != b'=' && !c.is_ascii_whitespace()).collect();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, &c)| n | u32::from(val(c)) << (18 - 6 * i));
        out.extend_from_slice(&n.to_be_bytes()[1..chunk.len()]);
    }
    out
}

#[test]
fn base64_cases() {
    for (text, bytes) in
        [("", &b""[..]), ("TQ==", b"M"), ("TWE=", b"Ma"), ("TWFu", b"Man"), ("iVBORw0K", b"\x89PNG\r\n")]
    {
        assert_eq!(base64_decode(text), bytes, "{text}");
    }
}

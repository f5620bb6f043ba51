//! Helpers shared by the fuzz targets: a scratch directory, input splitting and a loopback HTTP
//! server that answers with bytes taken from the fuzz input.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

/// A per-process scratch directory (on tmpfs when there is one), removed and recreated empty by
/// every call.
pub fn scratch(name: &str) -> PathBuf {
    static ROOT: OnceLock<tempfile::TempDir> = OnceLock::new();
    let root = ROOT.get_or_init(|| {
        let shm = Path::new("/dev/shm");
        let base = if shm.is_dir() {
            shm.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        tempfile::Builder::new()
            .prefix("exptrack-fuzz-")
            .tempdir_in(base)
            .expect("scratch dir")
    });
    let dir = root.path().join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

/// Splits `data` at `sep` into at most `n` parts (the last one keeps any further separators).
pub fn split(data: &[u8], sep: u8, n: usize) -> Vec<&[u8]> {
    data.splitn(n, |&b| b == sep).collect()
}

/// One canned HTTP answer.
#[derive(Debug, Clone)]
pub struct Answer {
    /// Status code.
    pub status: u16,
    /// Body.
    pub body: Vec<u8>,
}

/// Answers for the next requests, in order; when they run out, the last one repeats (a server
/// that keeps sending the same page), or `200 {}` when there were none. `{{SERVER}}` in a body
/// becomes the server's base URL (for upload URLs that point back at it).
static ANSWERS: Mutex<(Vec<Answer>, usize)> = Mutex::new((Vec::new(), 0));

/// The loopback server's base URL (`http://127.0.0.1:<port>`), started on first use.
pub fn server() -> &'static str {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let port = listener.local_addr().expect("local addr").port();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                std::thread::spawn(move || serve(conn));
            }
        });
        format!("http://127.0.0.1:{port}")
    })
}

/// Sets the answers for the next requests.
pub fn set_answers(answers: Vec<Answer>) {
    let mut a = ANSWERS.lock().unwrap_or_else(|e| e.into_inner());
    *a = (answers, 0);
}

/// How many requests were answered since the last [`set_answers`].
pub fn answered() -> usize {
    ANSWERS.lock().unwrap_or_else(|e| e.into_inner()).1
}

fn next_answer() -> Answer {
    let mut a = ANSWERS.lock().unwrap_or_else(|e| e.into_inner());
    let i = a.1;
    a.1 += 1;
    match a.0.get(i).or(a.0.last()) {
        Some(x) => x.clone(),
        None => Answer {
            status: 200,
            body: b"{}".to_vec(),
        },
    }
}

/// Serves HTTP/1.1 requests on one connection (keep-alive) until the client closes it.
fn serve(conn: TcpStream) {
    let _ = conn.set_nodelay(true);
    let Ok(write_half) = conn.try_clone() else {
        return;
    };
    let mut out = write_half;
    let mut rd = BufReader::new(conn);
    loop {
        let mut len = 0usize;
        let mut chunked = false;
        let mut first = true;
        loop {
            let mut line = String::new();
            match rd.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            if line == "\r\n" || line == "\n" {
                if first {
                    continue;
                }
                break;
            }
            first = false;
            let lower = line.to_ascii_lowercase();
            if let Some(v) = lower.strip_prefix("content-length:") {
                len = v.trim().parse().unwrap_or(0);
            }
            if lower.starts_with("transfer-encoding:") && lower.contains("chunked") {
                chunked = true;
            }
        }
        if chunked {
            // Read chunks until the terminating zero-length one.
            loop {
                let mut size = String::new();
                if rd.read_line(&mut size).unwrap_or(0) == 0 {
                    return;
                }
                let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
                let mut skip = vec![0u8; n + 2];
                if rd.read_exact(&mut skip).is_err() {
                    return;
                }
                if n == 0 {
                    break;
                }
            }
        } else if len > 0 {
            let mut body = vec![0u8; len];
            if rd.read_exact(&mut body).is_err() {
                return;
            }
        }
        let mut a = next_answer();
        a.body = with_server_url(&a.body);
        let head = format!(
            "HTTP/1.1 {} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            a.status,
            a.body.len()
        );
        if out.write_all(head.as_bytes()).is_err() || out.write_all(&a.body).is_err() {
            return;
        }
    }
}

fn with_server_url(body: &[u8]) -> Vec<u8> {
    const MARK: &[u8] = b"{{SERVER}}";
    let url = server().as_bytes();
    let mut out = Vec::with_capacity(body.len());
    let mut rest = body;
    while let Some(i) = rest.windows(MARK.len()).position(|w| w == MARK) {
        out.extend_from_slice(&rest[..i]);
        out.extend_from_slice(url);
        rest = &rest[i + MARK.len()..];
    }
    out.extend_from_slice(rest);
    out
}

/// Turns fuzz input into answers: parts separated by `0xFF`, each `<status selector byte><body>`.
pub fn answers_from(data: &[u8], max: usize) -> Vec<Answer> {
    split(data, 0xFF, max)
        .into_iter()
        .map(|p| {
            let (sel, body) = p.split_first().map_or((0, &[][..]), |(s, b)| (*s, b));
            let status = match sel % 8 {
                0..=4 => 200,
                5 => 404,
                6 => 400,
                _ => 403,
            };
            Answer {
                status,
                body: body.to_vec(),
            }
        })
        .collect()
}

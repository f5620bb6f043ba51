//! The caller → dispatcher queue: bounded in messages and in bytes of payload, and the messages
//! that travel on it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, bounded};

use crate::event::Event;
use crate::metadata::RunStatus;

use super::report::FinishReport;

/// Byte accounting of the caller → dispatcher queue (the channel bounds messages; this bounds
/// their payload).
#[derive(Debug)]
pub(crate) struct QueueBytes {
    used: AtomicUsize,
    max: usize,
    /// False once the dispatcher thread is gone (then nobody frees room).
    alive: AtomicBool,
}

/// The sending side of the caller → dispatcher queue, shared by the handle and the sampler.
#[derive(Clone)]
pub(crate) struct Queue {
    tx: Sender<Msg>,
    bytes: Arc<QueueBytes>,
}

impl Queue {
    /// A queue of `capacity` messages and `max_bytes` bytes; the receiver and the accounting go to
    /// the dispatcher.
    pub(crate) fn new(
        capacity: usize,
        max_bytes: usize,
    ) -> (Queue, Receiver<Msg>, Arc<QueueBytes>) {
        let (tx, rx) = bounded(capacity);
        let bytes = Arc::new(QueueBytes {
            used: AtomicUsize::new(0),
            max: max_bytes.max(1),
            alive: AtomicBool::new(true),
        });
        (
            Queue {
                tx,
                bytes: Arc::clone(&bytes),
            },
            rx,
            bytes,
        )
    }

    /// Enqueues a message. An event first waits for room in bytes: only while the queue already
    /// holds more than its byte bound of events that the dispatcher has not taken yet (it takes
    /// them before writing anything, so the wait is for that hand-off, not for disk or network).
    /// An event larger than the whole bound goes through once the queue is empty.
    pub(crate) fn send(&self, msg: Msg) -> Result<(), ()> {
        let n = match &msg {
            Msg::Event(e) => e.approx_bytes(),
            _ => 0,
        };
        if n > 0 {
            self.reserve(n)?;
        }
        self.tx.send(msg).map_err(|_| {
            self.bytes.release(n);
        })
    }

    fn reserve(&self, n: usize) -> Result<(), ()> {
        let b = &self.bytes;
        let mut wait = Duration::from_micros(50);
        loop {
            let used = b.used.load(Ordering::SeqCst);
            if used == 0 || used.saturating_add(n) <= b.max {
                if b.used
                    .compare_exchange(
                        used,
                        used.saturating_add(n),
                        Ordering::SeqCst,
                        Ordering::SeqCst,
                    )
                    .is_ok()
                {
                    return Ok(());
                }
                continue;
            }
            if !b.alive.load(Ordering::SeqCst) {
                return Err(());
            }
            std::thread::sleep(wait);
            wait = (wait * 2).min(Duration::from_millis(2));
        }
    }
}

impl QueueBytes {
    pub(crate) fn release(&self, n: usize) {
        let _ = self
            .used
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |u| {
                Some(u.saturating_sub(n))
            });
    }

    /// Bytes of events in the queue now.
    #[cfg(test)]
    pub(crate) fn used(&self) -> usize {
        self.used.load(Ordering::SeqCst)
    }
}

/// Marks the queue's dispatcher gone when dropped (also when its thread panics).
pub(super) struct Alive(pub(super) Arc<QueueBytes>);

impl Drop for Alive {
    fn drop(&mut self) {
        self.0.alive.store(false, Ordering::SeqCst);
    }
}

/// A message from the caller's handle to the dispatcher.
pub(crate) enum Msg {
    Event(Event),
    Flush(Sender<FlushAck>),
    /// Everything before it appended to the log and fsynced; no tracker is waited for.
    SyncLog(Sender<FlushAck>),
    Finish(RunStatus, Sender<FinishReport>),
}

/// One acknowledgement of a flush (from the store or a tracker).
#[derive(Debug)]
pub(crate) struct FlushAck {
    pub(crate) name: String,
    pub(crate) error: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(bytes: usize) -> Msg {
        Msg::Event(Event::Image {
            step: 0,
            timestamp_ms: 0,
            tag: String::new(),
            width: 1,
            height: 1,
            channels: 4,
            png: vec![0; bytes],
        })
    }

    #[test]
    fn the_queue_is_bounded_in_bytes_and_waits_only_for_the_hand_off() {
        let (q, rx, bytes) = Queue::new(1000, 1 << 20);
        let sender = std::thread::spawn(move || {
            for _ in 0..16 {
                q.send(image(256 << 10)).unwrap();
            }
        });
        // Nobody takes events: the sender stops after the bound (4 × 256 KiB < 1 MiB + an event).
        std::thread::sleep(Duration::from_millis(200));
        assert!(bytes.used() <= (1 << 20), "{}", bytes.used());
        assert!(rx.len() <= 4, "{} queued", rx.len());
        // Taking them off (as the dispatcher does, before any write) lets it go on.
        let mut got = 0;
        while got < 16 {
            if let Ok(Msg::Event(e)) = rx.recv_timeout(Duration::from_secs(5)) {
                bytes.release(e.approx_bytes());
                got += 1;
            }
        }
        sender.join().unwrap();
        assert_eq!(bytes.used(), 0);
    }

    #[test]
    fn a_gone_dispatcher_does_not_leave_a_sender_waiting() {
        let (q, rx, bytes) = Queue::new(1000, 1 << 10);
        q.send(image(4 << 10)).unwrap(); // larger than the bound, alone: goes through
        let alive = Alive(Arc::clone(&bytes));
        drop(alive);
        drop(rx);
        assert!(q.send(image(4 << 10)).is_err());
    }
}

//! Progress on stdout: a bar on a terminal, a line per log step otherwise, or nothing.

/// How the loop reports progress.
pub(crate) enum Progress {
    Bar(indicatif::ProgressBar),
    Lines,
    Quiet,
}

impl Progress {
    pub(crate) fn new(enabled: bool, interactive: bool, total: u64, done: u64) -> Self {
        if !enabled {
            return Progress::Quiet;
        }
        if !interactive {
            return Progress::Lines;
        }
        let bar = indicatif::ProgressBar::new(total);
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{bar:30} {pos}/{len} steps [{elapsed_precise}<{eta_precise}] {msg}",
        ) {
            bar.set_style(style);
        }
        bar.set_position(done);
        Progress::Bar(bar)
    }

    pub(crate) fn step(&self, step: u64, msg: impl FnOnce() -> String, log_line: bool) {
        match self {
            Progress::Bar(b) => {
                b.set_position(step);
                if log_line {
                    b.set_message(msg());
                }
            }
            Progress::Lines => {
                if log_line {
                    println!("{}", msg());
                }
            }
            Progress::Quiet => {}
        }
    }

    pub(crate) fn line(&self, text: &str) {
        match self {
            Progress::Bar(b) => b.println(text),
            Progress::Lines => println!("{text}"),
            Progress::Quiet => {}
        }
    }

    pub(crate) fn finish(&self) {
        if let Progress::Bar(b) = self {
            b.finish_and_clear();
        }
    }
}

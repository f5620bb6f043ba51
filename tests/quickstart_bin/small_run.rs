//! The `[training]` and `[quickstart]` sections of a quickstart run that takes a few seconds
//! (2 epochs of 32 steps of 64 items, checkpoints every 20 steps), shared by the quickstart tests.

/// The sections, as TOML text to append after `[experiment]` and `[checkpointing]`.
pub const SMALL_RUN: &str = r#"
[training]
num_epochs = 2
batch_size = 64
learning_rate = 0.003
log_frequency = 10
checkpoint_save_frequency = 20
seed = 7
device = "cpu"
progress = false

[quickstart]
train_items = 2000
valid_items = 500
hidden = 32
"#;

//! The `exptrack` command line (work in progress).
fn main() {
    println!("exptrack: nothing here yet");
}

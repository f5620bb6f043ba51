use exptrack::trainer::quickstart::{CLASSES, FEATURES, Mlp, generate_dataset};
use exptrack::{Experiment, Start};

fn main() -> exptrack::Result<()> {
    let mut run = match Experiment::from_file("experiment.toml")?.start()? {
        Start::Completed(done) => {
            println!("{done}");
            return Ok(());
        }
        Start::Train(run) => run,
    };
    // Your data (any `BatchSource`) and model (any `TrainModel`, created on `run.device()`).
    let (train, valid) = generate_dataset(8000, 2000, 42)?;
    let model = Mlp::new(FEATURES, 128, CLASSES, run.device());
    let (_model, result) = run.fit(model, &train, &valid)?; // resumes from the last checkpoint
    println!("{}", run.finish(&result)?);
    Ok(())
}

use std::process::ExitCode;

use inventory_app::{Settings, startup};

fn main() -> ExitCode {
    common::cli::Service {
        name: "inventory-app",
        settings: Settings::from_env,
        listen: |settings| settings.listen,
        serve: startup::serve,
        commands: &[],
    }
    .main()
}

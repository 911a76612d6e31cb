use std::process::ExitCode;

use billing_app::{Settings, startup};

fn main() -> ExitCode {
    common::cli::Service {
        name: "billing-app",
        settings: Settings::from_env,
        listen: |settings| settings.listen,
        serve: startup::serve,
    }
    .main()
}

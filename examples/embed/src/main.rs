//! `openexec-embed-example`: OpenExec with the `slugify` action of this crate beside the
//! built-ins, configured exactly like `openexec serve` (the same flags, `OPENEXEC_*` variables
//! and `--config` file, `OPENEXEC_ACTIONS` included).
#![forbid(unsafe_code)]

use clap::Parser;
use openexec_exec::{Config, Service, Settings};
use openexec_kit::config::Layers;

#[derive(Parser)]
#[command(about = "OpenExec with an embedder's own handler (the slugify example)")]
struct Args {
    #[command(flatten)]
    settings: Layers<Settings>,
}

fn main() -> anyhow::Result<()> {
    openexec_kit::run::init_logging("OPENEXEC_LOG");
    let cfg = Config::from_settings(Args::parse().settings.load()?)?;
    openexec_kit::run::until_stopped(|stop| async move {
        let svc = Service::start_declared(
            cfg,
            openexec_example_embed::registry(),
            &openexec_example_embed::kinds(),
        )
        .await?;
        println!(
            "openexec-embed-example: listening on http://{}",
            svc.local_addr()?
        );
        svc.run(stop).await
    })
}

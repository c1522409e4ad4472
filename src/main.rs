use clap::Parser;

fn main() {
    let cli = iam_inventory::cli::Cli::parse();
    iam_inventory::telemetry::init(cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("iam-inventory: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    let code = runtime.block_on(iam_inventory::app::run(cli));
    std::process::exit(code);
}

//! `admin [--db URL] <command> [NAME|ADDRESS]`: see [`ssl_server_client::admin`].
fn main() -> std::process::ExitCode {
    ssl_server_client::admin::main()
}

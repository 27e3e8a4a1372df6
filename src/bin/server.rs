//! `server [options] <portnum>`: see [`ssl_server_client::server`].
fn main() -> std::process::ExitCode {
    ssl_server_client::server::main()
}

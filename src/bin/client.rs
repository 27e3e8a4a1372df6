//! `client [options] <hostname> <portnum>`: see [`ssl_server_client::client`].
fn main() -> std::process::ExitCode {
    ssl_server_client::client::main()
}

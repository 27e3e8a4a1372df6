//! `bench [options] <hostname> <portnum>`: see [`ssl_server_client::bench`].
fn main() -> std::process::ExitCode {
    ssl_server_client::bench::main()
}

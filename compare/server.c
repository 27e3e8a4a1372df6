/*
 * compare/server.c: the project's stand-in for the original server.c, used by `make compare`.
 *
 * It behaves as docs/LEGACY.md and /work/shared/legacy-wire.md describe the original: TLS 1.2
 * only, ./mycert.pem, one client at a time (a serial accept loop), one SSL_read of up to 1024
 * bytes, strcmp of the whole request against the one valid request (aticle / 123), the
 * 220-byte reply or "Invalid Message", no close_notify, and the same console lines
 * ("Connection: ip:port", "No certificates.", "Client msg: \"...\"") with the password shown.
 *
 * Where it departs from the original, on purpose (it is a test peer, not a product):
 * - it runs as any user (the original exits unless run as root);
 * - it listens on 127.0.0.1 only (the original binds INADDR_ANY);
 * - stdout is line-buffered, so a script reading it through a pipe sees each line at once;
 * - it does not write buf[-1] when a read fails;
 * - with COMPARE_WIRE_DIR set, it writes the bytes it read to server-request.bin and the bytes
 *   it writes (just before SSL_write) to server-reply.bin in that directory (overwritten on
 *   every connection).
 *
 * Build: gcc -Wall -Wextra -o server compare/server.c -lssl -lcrypto
 * Usage: server <portnum>
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#define FAIL -1

/* The one request the original accepts: aticle / 123 (127 bytes; "\\" is one backslash). */
static const char *cpValidMessage =
    "<Body>                               <UserName>aticle<UserName>"
    "                 <Password>123<Password>                 <\\Body>";

/* The original's ServerResponse (220 bytes; "Embedede" and "c\c++" as in the original). */
static const char *ServerResponse =
    "<\\Body>                               <Name>aticleworld.com</Name>"
    "                 <year>1.5</year>"
    "                 <BlogType>Embedede and c\\c++<\\BlogType>"
    "                 <Author>amlendra<Author>                 <\\Body>";

/* With COMPARE_WIRE_DIR set, writes `len` bytes to the file `name` in that directory. */
static void SaveWire(const char *name, const char *bytes, int len)
{
    const char *dir = getenv("COMPARE_WIRE_DIR");
    char path[4096];
    FILE *file;

    if (dir == NULL || len < 0)
        return;
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    file = fopen(path, "wb");
    if (file == NULL) {
        perror(path);
        return;
    }
    fwrite(bytes, 1, (size_t)len, file);
    fclose(file);
}

/* OpenListener: a TCP socket listening on `port` (on loopback only, see above). */
static int OpenListener(int port)
{
    int sd, on = 1;
    struct sockaddr_in addr;

    sd = socket(PF_INET, SOCK_STREAM, 0);
    setsockopt(sd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on));
    memset(&addr, 0, sizeof(addr));
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(sd, (struct sockaddr *)&addr, sizeof(addr)) != 0) {
        perror("can't bind port");
        abort();
    }
    if (listen(sd, 10) != 0) {
        perror("Can't configure listening port");
        abort();
    }
    return sd;
}

/* InitServerCTX: the original's TLSv1_2_server_method(), as OpenSSL 3 spells it. */
static SSL_CTX *InitServerCTX(void)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());

    if (ctx == NULL || !SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) ||
        !SSL_CTX_set_max_proto_version(ctx, TLS1_2_VERSION)) {
        ERR_print_errors_fp(stderr);
        abort();
    }
    return ctx;
}

/* LoadCertificates: the certificate and its key (one file for both, as the original). */
static void LoadCertificates(SSL_CTX *ctx, const char *CertFile, const char *KeyFile)
{
    if (SSL_CTX_use_certificate_file(ctx, CertFile, SSL_FILETYPE_PEM) <= 0 ||
        SSL_CTX_use_PrivateKey_file(ctx, KeyFile, SSL_FILETYPE_PEM) <= 0) {
        ERR_print_errors_fp(stderr);
        abort();
    }
    if (!SSL_CTX_check_private_key(ctx)) {
        fprintf(stderr, "Private key does not match the public certificate\n");
        abort();
    }
}

/* ShowCerts: the client's certificate, under the original's heading "Server certificates". */
static void ShowCerts(SSL *ssl)
{
    X509 *cert = SSL_get1_peer_certificate(ssl);
    char *line;

    if (cert != NULL) {
        printf("Server certificates:\n");
        line = X509_NAME_oneline(X509_get_subject_name(cert), 0, 0);
        printf("Subject: %s\n", line);
        OPENSSL_free(line);
        line = X509_NAME_oneline(X509_get_issuer_name(cert), 0, 0);
        printf("Issuer: %s\n", line);
        OPENSSL_free(line);
        X509_free(cert);
    } else {
        printf("No certificates.\n");
    }
}

/* Servlet: handshake, one read, strcmp, one reply, close without close_notify. */
static void Servlet(SSL *ssl)
{
    char buf[1024 + 1] = {0};
    const char *reply;
    int sd, bytes;

    if (SSL_accept(ssl) == FAIL) {
        ERR_print_errors_fp(stderr);
    } else {
        ShowCerts(ssl);
        bytes = SSL_read(ssl, buf, 1024);
        buf[bytes > 0 ? bytes : 0] = '\0';
        SaveWire("server-request.bin", buf, bytes);
        printf("Client msg: \"%s\"\n", buf);
        if (bytes > 0) {
            reply = strcmp(cpValidMessage, buf) == 0 ? ServerResponse : "Invalid Message";
            /* Saved before it is sent: once the client has it, the server may be stopped. */
            SaveWire("server-reply.bin", reply, (int)strlen(reply));
            SSL_write(ssl, reply, (int)strlen(reply));
        } else {
            ERR_print_errors_fp(stderr);
        }
    }
    sd = SSL_get_fd(ssl);
    SSL_free(ssl);
    close(sd);
}

int main(int count, char *Argc[])
{
    SSL_CTX *ctx;
    int server;

    setvbuf(stdout, NULL, _IOLBF, 0);
    if (count != 2) {
        printf("Usage: %s <portnum>\n", Argc[0]);
        exit(0);
    }
    ctx = InitServerCTX();
    LoadCertificates(ctx, "mycert.pem", "mycert.pem");
    server = OpenListener(atoi(Argc[1]));
    for (;;) {
        struct sockaddr_in addr;
        socklen_t len = sizeof(addr);
        SSL *ssl;
        int client = accept(server, (struct sockaddr *)&addr, &len);

        if (client < 0) {
            perror("accept");
            continue;
        }
        printf("Connection: %s:%d\n", inet_ntoa(addr.sin_addr), ntohs(addr.sin_port));
        ssl = SSL_new(ctx);
        SSL_set_fd(ssl, client);
        Servlet(ssl);
    }
}

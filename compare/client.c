/*
 * compare/client.c: the project's stand-in for the original client.c, used by `make compare`.
 *
 * It behaves as docs/LEGACY.md and /work/shared/legacy-wire.md describe the original: TLS 1.2
 * only, no certificate verification, connect first, then the prompts "Enter the User Name : "
 * and "\n\nEnter the Password : " with scanf, the request in one SSL_write, one SSL_read, and
 * the same lines ("Connected with ... encryption", the server's certificate, "Received: ...").
 *
 * Where it departs from the original, on purpose (it is a test peer, not a product):
 * - scanf("%15s") into the 16-byte buffers, so a long name or password cannot overflow them;
 * - it does not write buf[-1] when a read fails;
 * - with COMPARE_WIRE_DIR set, it writes the bytes it wrote to client-request.bin and the bytes
 *   it read to client-reply.bin in that directory.
 *
 * Build: gcc -Wall -Wextra -o client compare/client.c -lssl -lcrypto
 * Usage: client <hostname> <portnum>
 */
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#define FAIL -1

/* The original's cpRequestMessage ("\\" is one backslash): 118 bytes plus name and password. */
static const char *cpRequestMessage =
    "<Body>                               <UserName>%s<UserName>"
    "                 <Password>%s<Password>                 <\\Body>";

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

/* OpenConnection: a TCP connection to hostname:port over IPv4, as the original. */
static int OpenConnection(const char *hostname, int port)
{
    struct hostent *host;
    struct sockaddr_in addr;
    int sd;

    if ((host = gethostbyname(hostname)) == NULL) {
        perror(hostname);
        abort();
    }
    sd = socket(PF_INET, SOCK_STREAM, 0);
    memset(&addr, 0, sizeof(addr));
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    memcpy(&addr.sin_addr, host->h_addr_list[0], sizeof(addr.sin_addr));
    if (connect(sd, (struct sockaddr *)&addr, sizeof(addr)) != 0) {
        close(sd);
        perror(hostname);
        abort();
    }
    return sd;
}

/* InitCTX: the original's TLSv1_2_client_method(), as OpenSSL 3 spells it; no verification. */
static SSL_CTX *InitCTX(void)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());

    if (ctx == NULL || !SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) ||
        !SSL_CTX_set_max_proto_version(ctx, TLS1_2_VERSION)) {
        ERR_print_errors_fp(stderr);
        abort();
    }
    return ctx;
}

/* ShowCerts: the server's certificate, or the original's note that there is none. */
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
        printf("Info: No client certificates configured.\n");
    }
}

int main(int count, char *strings[])
{
    char buf[1024 + 1];
    char acClientRequest[1024] = {0};
    char acUsername[16] = {0};
    char acPassword[16] = {0};
    SSL_CTX *ctx;
    SSL *ssl;
    int server, bytes, len;

    if (count != 3) {
        printf("usage: %s <hostname> <portnum>\n", strings[0]);
        exit(0);
    }
    ctx = InitCTX();
    server = OpenConnection(strings[1], atoi(strings[2]));
    ssl = SSL_new(ctx);
    SSL_set_fd(ssl, server);
    if (SSL_connect(ssl) == FAIL) {
        ERR_print_errors_fp(stderr);
    } else {
        printf("Enter the User Name : ");
        if (scanf("%15s", acUsername) != 1)
            acUsername[0] = '\0';
        printf("\n\nEnter the Password : ");
        if (scanf("%15s", acPassword) != 1)
            acPassword[0] = '\0';
        len = snprintf(acClientRequest, sizeof(acClientRequest), cpRequestMessage, acUsername,
                       acPassword);
        printf("\n\nConnected with %s encryption\n", SSL_get_cipher(ssl));
        ShowCerts(ssl);
        SSL_write(ssl, acClientRequest, len);
        SaveWire("client-request.bin", acClientRequest, len);
        bytes = SSL_read(ssl, buf, 1024);
        buf[bytes > 0 ? bytes : 0] = '\0';
        SaveWire("client-reply.bin", buf, bytes);
        printf("Received: \"%s\"\n", buf);
        SSL_free(ssl);
    }
    close(server);
    SSL_CTX_free(ctx);
    return 0;
}

/*
 * The host board: the firmware as a Linux process serving a pseudo-terminal.
 *
 * It opens the pty itself and prints "PORT <slave path>" on stdout, so a harness connects to it
 * as to any serial port. It keeps the slave side open too: otherwise the master reads fail with
 * EIO whenever no harness is connected, and a harness could not disconnect and come back.
 * Ticks are CLOCK_MONOTONIC nanoseconds. SIGTERM or SIGINT ends it with exit code 0.
 */
#define _XOPEN_SOURCE 700
#define _DEFAULT_SOURCE

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "app.h"
#include "platform.h"

#ifndef MCU_IDS_BOARD_NAME
#define MCU_IDS_BOARD_NAME "host"
#endif
#ifndef MCU_IDS_CPU_HZ
#define MCU_IDS_CPU_HZ 1000000000u
#endif

#define HOST_TICK_HZ 1000000000u
#define NS_PER_S 1000000000ull
/* A reply nobody reads fills the pty buffer; past this wait it is dropped instead of blocking. */
#define HOST_WRITE_TIMEOUT_MS 2000

static int master_fd = -1;
static int slave_fd = -1;
static volatile sig_atomic_t stop_requested;

static void host_fail(const char *what)
{
    fprintf(stderr, "mcu-ids host firmware: %s: %s\n", what, strerror(errno));
    exit(EXIT_FAILURE);
}

static void host_on_signal(int signo)
{
    (void)signo;
    stop_requested = 1;
}

static void host_install_signals(void)
{
    struct sigaction action;

    memset(&action, 0, sizeof action);
    action.sa_handler = host_on_signal;
    sigemptyset(&action.sa_mask);
    /* No SA_RESTART: a signal must interrupt poll() so the loop sees the stop request. */
    if (sigaction(SIGTERM, &action, NULL) != 0 || sigaction(SIGINT, &action, NULL) != 0) {
        host_fail("sigaction");
    }
    /* The launcher closes its end of stdout after reading the PORT line. */
    signal(SIGPIPE, SIG_IGN);
}

static void host_open_pty(void)
{
    struct termios tio;
    const char *slave_path;

    master_fd = posix_openpt(O_RDWR | O_NOCTTY);
    if (master_fd < 0) {
        host_fail("posix_openpt");
    }
    if (grantpt(master_fd) != 0 || unlockpt(master_fd) != 0) {
        host_fail("grantpt/unlockpt");
    }
    slave_path = ptsname(master_fd);
    if (slave_path == NULL) {
        host_fail("ptsname");
    }
    slave_fd = open(slave_path, O_RDWR | O_NOCTTY);
    if (slave_fd < 0) {
        host_fail("open pty slave");
    }
    if (tcgetattr(slave_fd, &tio) != 0) {
        host_fail("tcgetattr");
    }
    cfmakeraw(&tio);
    if (tcsetattr(slave_fd, TCSANOW, &tio) != 0) {
        host_fail("tcsetattr");
    }
    if (fcntl(master_fd, F_SETFL, fcntl(master_fd, F_GETFL) | O_NONBLOCK) != 0) {
        host_fail("fcntl");
    }
    printf("PORT %s\n", slave_path);
    fflush(stdout);
}

void platform_init(void)
{
    host_install_signals();
    host_open_pty();
}

size_t platform_read(uint8_t *buf, size_t len, uint32_t timeout_ms)
{
    struct pollfd pfd;
    ssize_t got;

    pfd.fd = master_fd;
    pfd.events = POLLIN;
    pfd.revents = 0;
    if (poll(&pfd, 1, (int)timeout_ms) <= 0) {
        return 0;
    }
    got = read(master_fd, buf, len);
    if (got < 0) {
        if (errno != EAGAIN && errno != EINTR && errno != EWOULDBLOCK) {
            fprintf(stderr, "mcu-ids host firmware: read: %s\n", strerror(errno));
        }
        return 0;
    }
    return (size_t)got;
}

void platform_write(const uint8_t *buf, size_t len)
{
    size_t done = 0;

    while (done < len && !stop_requested) {
        ssize_t put = write(master_fd, buf + done, len - done);

        if (put > 0) {
            done += (size_t)put;
        } else if (put < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
            struct pollfd pfd;

            pfd.fd = master_fd;
            pfd.events = POLLOUT;
            pfd.revents = 0;
            if (poll(&pfd, 1, HOST_WRITE_TIMEOUT_MS) == 0) {
                fprintf(stderr, "mcu-ids host firmware: nobody reads the port, reply dropped\n");
                return;
            }
        } else {
            fprintf(stderr, "mcu-ids host firmware: write: %s\n", strerror(errno));
            return;
        }
    }
}

uint32_t platform_ticks(void)
{
    struct timespec now;

    clock_gettime(CLOCK_MONOTONIC, &now);
    /* Truncation to 32 bits is intended: only differences are used, and they wrap correctly. */
    return (uint32_t)((unsigned long long)now.tv_sec * NS_PER_S + (unsigned long long)now.tv_nsec);
}

uint32_t platform_tick_hz(void)
{
    return HOST_TICK_HZ;
}

uint32_t platform_cpu_hz(void)
{
    return MCU_IDS_CPU_HZ;
}

const char *platform_board_name(void)
{
    return MCU_IDS_BOARD_NAME;
}

const char *platform_tick_kind(void)
{
    return "ns";
}

void platform_marker(int level)
{
    /* The host has no pin to raise; energy is not measured here. */
    (void)level;
}

int main(void)
{
    platform_init();
    app_init();
    while (!stop_requested) {
        app_poll();
    }
    close(slave_fd);
    close(master_fd);
    return EXIT_SUCCESS;
}

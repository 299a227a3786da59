// The NATS JetStream side of bench/compare.sh: what `sluice-bench produce` does, against
// a JetStream stream, through Debian's C client (libnats-dev). One publisher, fixed-size
// records, asynchronous publishes with up to MAX_PENDING awaiting their acknowledgement.
// With a rate the run is open loop as in sluice-bench: record i is due at start + i/rate,
// sent then (the thread sleeps until it is due), and its latency runs from that due time;
// without one, from the publish call. Prints one JSON line in sluice-bench's summary
// format (mb_per_sec, latency_ms p50/p99/p999/max).
//
//   cc -O2 -o nats_pub nats_pub.c -lnats
//   nats_pub URL STREAM RECORDS RECORD_SIZE RATE MAX_PENDING    (RATE 0: as fast as it goes)

#include <nats/nats.h>

#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int64_t *start_ns;  // per record: due time (with a rate) or publish time
static int64_t *latency_ns;
static atomic_long acked;
static atomic_long failed;

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void sleep_until(int64_t ns) {
    struct timespec ts = {.tv_sec = ns / 1000000000, .tv_nsec = ns % 1000000000};
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) != 0) {
    }
}

// The record's index is in its first 8 bytes.
static void on_ack(jsCtx *js, natsMsg *msg, jsPubAck *pa, jsPubAckErr *pae, void *closure) {
    (void)js;
    (void)pa;
    (void)closure;
    int64_t index;
    memcpy(&index, natsMsg_GetData(msg), sizeof index);
    if (pae != NULL) {
        if (atomic_fetch_add(&failed, 1) == 0) {
            fprintf(stderr, "nats_pub: record %lld not acknowledged: %s\n", (long long)index,
                    pae->ErrText != NULL ? pae->ErrText : natsStatus_GetText(pae->Err));
        }
    } else {
        latency_ns[index] = now_ns() - start_ns[index];
    }
    atomic_fetch_add(&acked, 1);
    natsMsg_Destroy(msg);
}

static int compare(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static double quantile_ms(const int64_t *sorted, long n, double q) {
    long i = (long)(q * (double)n);
    if (i >= n) i = n - 1;
    return (double)sorted[i] / 1e6;
}

static int fail(const char *what, natsStatus s) {
    fprintf(stderr, "nats_pub: %s: %s\n", what, natsStatus_GetText(s));
    nats_PrintLastErrorStack(stderr);
    return 1;
}

int main(int argc, char **argv) {
    if (argc != 7) {
        fprintf(stderr, "usage: %s URL STREAM RECORDS RECORD_SIZE RATE MAX_PENDING\n", argv[0]);
        return 2;
    }
    const char *url = argv[1], *stream = argv[2];
    long records = atol(argv[3]), size = atol(argv[4]);
    double rate = atof(argv[5]);
    long max_pending = atol(argv[6]);
    if (records <= 0 || size < 8 || rate < 0 || max_pending <= 0) {
        fprintf(stderr, "nats_pub: RECORDS > 0, RECORD_SIZE >= 8, RATE >= 0, MAX_PENDING > 0\n");
        return 2;
    }

    natsConnection *nc = NULL;
    jsCtx *js = NULL;
    jsOptions options;
    jsStreamConfig config;
    jsErrCode code = 0;
    natsStatus s = natsConnection_ConnectTo(&nc, url);
    if (s != NATS_OK) return fail("connect", s);
    jsOptions_Init(&options);
    options.PublishAsync.MaxPending = max_pending;
    options.PublishAsync.AckHandler = on_ack;
    s = natsConnection_JetStream(&js, nc, &options);
    if (s != NATS_OK) return fail("JetStream context", s);
    // A file-backed stream on one subject of the same name, as a one-partition topic.
    jsStreamConfig_Init(&config);
    config.Name = stream;
    config.Subjects = (const char *[]){stream};
    config.SubjectsLen = 1;
    config.Storage = js_FileStorage;
    s = js_AddStream(NULL, js, &config, NULL, &code);
    if (s != NATS_OK) return fail("create the stream", s);

    start_ns = calloc((size_t)records, sizeof *start_ns);
    latency_ns = calloc((size_t)records, sizeof *latency_ns);
    char *payload = malloc((size_t)size);
    if (start_ns == NULL || latency_ns == NULL || payload == NULL) {
        fprintf(stderr, "nats_pub: out of memory\n");
        return 1;
    }
    // Incompressible, as sluice-bench's records are.
    srand(42);
    for (long i = 0; i < size; i++) payload[i] = (char)rand();

    int64_t begin = now_ns();
    for (long i = 0; i < records; i++) {
        int64_t index = i;
        memcpy(payload, &index, sizeof index);
        if (rate > 0) {
            int64_t due = begin + (int64_t)((double)i * 1e9 / rate);
            sleep_until(due);
            start_ns[i] = due;
        } else {
            start_ns[i] = now_ns();
        }
        // Blocks while MAX_PENDING publishes await their acknowledgement.
        s = js_PublishAsync(js, stream, payload, (int)size, NULL);
        if (s != NATS_OK) return fail("publish", s);
    }
    jsPubOptions wait;
    jsPubOptions_Init(&wait);
    wait.MaxWait = 60000;
    s = js_PublishAsyncComplete(js, &wait);
    if (s != NATS_OK) return fail("wait for the acknowledgements", s);
    while (atomic_load(&acked) < records) sleep_until(now_ns() + 1000000);
    double seconds = (double)(now_ns() - begin) / 1e9;
    if (atomic_load(&failed) > 0) {
        fprintf(stderr, "nats_pub: %ld records not acknowledged\n", atomic_load(&failed));
        return 1;
    }

    qsort(latency_ns, (size_t)records, sizeof *latency_ns, compare);
    printf("{\"records\": %ld, \"mb_per_sec\": %.1f, \"records_per_sec\": %.0f, "
           "\"latency_ms\": {\"p50\": %.3f, \"p99\": %.3f, \"p999\": %.3f, \"max\": %.3f}}\n",
           records, (double)records * (double)size / 1e6 / seconds, (double)records / seconds,
           quantile_ms(latency_ns, records, 0.50), quantile_ms(latency_ns, records, 0.99),
           quantile_ms(latency_ns, records, 0.999), quantile_ms(latency_ns, records, 1.0));

    jsCtx_Destroy(js);
    natsConnection_Destroy(nc);
    free(payload);
    free(start_ns);
    free(latency_ns);
    return 0;
}

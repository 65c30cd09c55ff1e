package dev.strom.reference;

import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.Properties;
import java.util.UUID;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.admin.TopicDescription;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.header.Header;
import org.apache.kafka.common.header.internals.RecordHeader;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.ByteArraySerializer;
import org.apache.kafka.common.utils.Utils;

/**
 * Produce/consume round trip with the Java client's defaults.
 *
 * <p>Creates a topic (Admin), produces keyed, keyless and header-carrying records with the
 * producer's defaults (acks=all, enable.idempotence=true, the built-in partitioner: murmur2 of
 * the key), reads them back with an assign()-only consumer (no group), and checks every record:
 * partition (murmur2 for keyed records), offset, key, value, headers, timestamp. Exit 0 when all
 * match, 1 on a mismatch, 2 when a client operation fails (the error is printed).
 *
 * <p>Arguments: --bootstrap HOST:PORT [--topic NAME] [--partitions N] [--records N]
 * [--producer-prop k=v]... [--consumer-prop k=v]...
 */
public final class RoundTrip {

    public static void main(String[] args) {
        String bootstrap = "127.0.0.1:19092";
        String topic = "java-roundtrip-" + UUID.randomUUID().toString().substring(0, 8);
        int partitions = 3;
        int records = 200;
        Map<String, String> producerProps = new HashMap<>();
        Map<String, String> consumerProps = new HashMap<>();
        for (int i = 0; i < args.length; i++) {
            String a = args[i];
            String v = i + 1 < args.length ? args[i + 1] : null;
            switch (a) {
                case "--bootstrap": bootstrap = v; i++; break;
                case "--topic": topic = v; i++; break;
                case "--partitions": partitions = Integer.parseInt(v); i++; break;
                case "--records": records = Integer.parseInt(v); i++; break;
                case "--producer-prop": put(producerProps, v); i++; break;
                case "--consumer-prop": put(consumerProps, v); i++; break;
                default:
                    System.err.println("unknown argument " + a);
                    System.exit(64);
            }
        }
        int code;
        try {
            code = run(bootstrap, topic, partitions, records, producerProps, consumerProps);
        } catch (Exception e) {
            Throwable root = e;
            while ((root instanceof ExecutionException || root.getCause() != null && root != root.getCause())
                    && root.getCause() != null) {
                root = root.getCause();
            }
            System.out.println("ERROR " + e.getClass().getName() + ": " + e.getMessage());
            System.out.println("ROOT " + root.getClass().getName() + ": " + root.getMessage());
            code = 2;
        }
        System.exit(code);
    }

    private static void put(Map<String, String> props, String kv) {
        int eq = kv.indexOf('=');
        if (eq <= 0) {
            throw new IllegalArgumentException("want key=value, got " + kv);
        }
        props.put(kv.substring(0, eq), kv.substring(eq + 1));
    }

    private static final class Sent {
        final byte[] key;
        final byte[] value;
        final List<Header> headers;
        final long timestamp;
        RecordMetadata meta;

        Sent(byte[] key, byte[] value, List<Header> headers, long timestamp) {
            this.key = key;
            this.value = value;
            this.headers = headers;
            this.timestamp = timestamp;
        }
    }

    static int run(String bootstrap, String topic, int partitions, int records,
                   Map<String, String> producerProps, Map<String, String> consumerProps) throws Exception {
        Properties ap = new Properties();
        ap.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        try (Admin admin = Admin.create(ap)) {
            admin.createTopics(List.of(new NewTopic(topic, Optional.of(partitions), Optional.empty())))
                    .all().get(30, TimeUnit.SECONDS);
            long deadline = System.currentTimeMillis() + 30_000;
            while (true) {
                try {
                    TopicDescription d = admin.describeTopics(List.of(topic)).allTopicNames()
                            .get(10, TimeUnit.SECONDS).get(topic);
                    if (d.partitions().size() == partitions
                            && d.partitions().stream().allMatch(p -> p.leader() != null)) {
                        break;
                    }
                } catch (ExecutionException e) {
                    if (System.currentTimeMillis() > deadline) {
                        throw e;
                    }
                }
                if (System.currentTimeMillis() > deadline) {
                    throw new IllegalStateException("topic " + topic + " not ready");
                }
                Thread.sleep(100);
            }
        }

        Properties pp = new Properties();
        pp.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        pp.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
        pp.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
        // Bounded waits so a broker that cannot serve the producer fails the run quickly;
        // everything else (acks, idempotence, partitioner, batching) stays at the defaults.
        pp.put(ProducerConfig.MAX_BLOCK_MS_CONFIG, "20000");
        pp.put(ProducerConfig.DELIVERY_TIMEOUT_MS_CONFIG, "40000");
        pp.putAll(producerProps);

        long t0 = (System.currentTimeMillis() / 1000) * 1000 - 60_000;
        List<Sent> sent = new ArrayList<>();
        for (int i = 0; i < records; i++) {
            byte[] key = i % 10 == 9 ? null : ("key-" + i).getBytes(StandardCharsets.UTF_8);
            byte[] value = i % 25 == 24 ? null : ("value-" + i + "-" + "x".repeat(i % 50)).getBytes(StandardCharsets.UTF_8);
            List<Header> headers = new ArrayList<>();
            if (i % 3 == 0) {
                headers.add(new RecordHeader("i", Integer.toString(i).getBytes(StandardCharsets.UTF_8)));
                headers.add(new RecordHeader("dup", "a".getBytes(StandardCharsets.UTF_8)));
                headers.add(new RecordHeader("dup", "b".getBytes(StandardCharsets.UTF_8)));
                headers.add(new RecordHeader("null", null));
            }
            sent.add(new Sent(key, value, headers, t0 + i));
        }
        try (KafkaProducer<byte[], byte[]> producer = new KafkaProducer<>(pp)) {
            List<Future<RecordMetadata>> futures = new ArrayList<>();
            for (Sent s : sent) {
                futures.add(producer.send(new ProducerRecord<>(topic, null, s.timestamp, s.key, s.value, s.headers)));
            }
            producer.flush();
            for (int i = 0; i < futures.size(); i++) {
                sent.get(i).meta = futures.get(i).get(60, TimeUnit.SECONDS);
            }
        }

        List<String> problems = new ArrayList<>();
        Map<TopicPartition, Long> next = new HashMap<>();
        for (Sent s : sent) {
            TopicPartition tp = new TopicPartition(topic, s.meta.partition());
            long expect = next.getOrDefault(tp, 0L);
            if (s.meta.offset() != expect) {
                problems.add("offset on " + tp + ": got " + s.meta.offset() + ", want " + expect);
            }
            next.put(tp, s.meta.offset() + 1);
            if (s.key != null) {
                int want = Utils.toPositive(Utils.murmur2(s.key)) % partitions;
                if (s.meta.partition() != want) {
                    problems.add("key " + new String(s.key, StandardCharsets.UTF_8) + " went to partition "
                            + s.meta.partition() + ", murmur2 says " + want);
                }
            }
        }

        Properties cp = new Properties();
        cp.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        cp.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
        cp.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
        cp.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
        cp.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
        cp.putAll(consumerProps);
        Map<String, ConsumerRecord<byte[], byte[]>> got = new HashMap<>();
        try (KafkaConsumer<byte[], byte[]> consumer = new KafkaConsumer<>(cp)) {
            List<TopicPartition> tps = new ArrayList<>();
            for (int p = 0; p < partitions; p++) {
                tps.add(new TopicPartition(topic, p));
            }
            consumer.assign(tps);
            consumer.seekToBeginning(tps);
            long deadline = System.currentTimeMillis() + 30_000;
            while (got.size() < records && System.currentTimeMillis() < deadline) {
                for (ConsumerRecord<byte[], byte[]> r : consumer.poll(Duration.ofMillis(500))) {
                    if (got.put(r.partition() + "@" + r.offset(), r) != null) {
                        problems.add("record " + r.partition() + "@" + r.offset() + " delivered twice");
                    }
                }
            }
        }
        if (got.size() != records) {
            problems.add("consumed " + got.size() + " records, produced " + records);
        }
        for (Sent s : sent) {
            ConsumerRecord<byte[], byte[]> r = got.get(s.meta.partition() + "@" + s.meta.offset());
            String where = s.meta.partition() + "@" + s.meta.offset();
            if (r == null) {
                problems.add("missing " + where);
                continue;
            }
            if (!Arrays.equals(r.key(), s.key)) {
                problems.add(where + ": key differs");
            }
            if (!Arrays.equals(r.value(), s.value)) {
                problems.add(where + ": value differs");
            }
            if (r.timestamp() != s.timestamp) {
                problems.add(where + ": timestamp " + r.timestamp() + ", want " + s.timestamp);
            }
            Header[] hs = r.headers().toArray();
            if (hs.length != s.headers.size()) {
                problems.add(where + ": " + hs.length + " headers, want " + s.headers.size());
            } else {
                for (int i = 0; i < hs.length; i++) {
                    Header a = hs[i];
                    Header b = s.headers.get(i);
                    if (!a.key().equals(b.key()) || !Arrays.equals(a.value(), b.value())) {
                        problems.add(where + ": header " + i + " differs");
                    }
                }
            }
        }
        String idem = producerProps.getOrDefault(ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, "default(true)");
        if (!problems.isEmpty()) {
            System.out.println("MISMATCH topic=" + topic + " problems=" + problems.size());
            problems.stream().limit(20).forEach(p -> System.out.println("  " + p));
            return 1;
        }
        System.out.println("OK topic=" + topic + " records=" + records + " partitions=" + partitions
                + " enable.idempotence=" + idem);
        return 0;
    }

    private RoundTrip() {
    }
}

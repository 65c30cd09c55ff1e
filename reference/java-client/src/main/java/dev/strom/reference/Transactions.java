package dev.strom.reference;

import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.Properties;
import java.util.UUID;
import java.util.concurrent.ExecutionException;
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
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.ByteArraySerializer;

/**
 * The Java client's transactional producer against either broker.
 *
 * <p>Modes:
 * <ul>
 *   <li>{@code txns}: N transactions of R records each over the topic's partitions, every K-th one aborted
 *   (after its records were flushed to the log); a read_committed consumer must see exactly the committed
 *   records, in order per partition, and a read_uncommitted consumer every record written.</li>
 *   <li>{@code fencing}: a first producer writes in an open transaction, a second producer with the same
 *   transactional.id initializes (fencing the first); the first's commit must fail (the exception class is
 *   printed), the second commits, and read_committed sees only the second's records.</li>
 *   <li>{@code rpw}: read-process-write. The topic is the input (filled with plain records); a consumer in a
 *   group (subscribe, read_committed, no auto commit) and a transactional producer copy it to TOPIC-out,
 *   sending the consumed offsets with the group metadata into each transaction; the second transaction is
 *   aborted and its input read again from the group's committed offset. Then TOPIC-out read with
 *   read_committed holds every input exactly once, and the group's offsets are at the input's end.</li>
 * </ul>
 *
 * <p>Prints {@code RESULT key=value} lines that the test compares between brokers and ends with
 * {@code OK mode=...}; exit 0 when every check passed, 1 on a mismatch, 2 when a client call fails.
 *
 * <p>Arguments: --bootstrap HOST:PORT --mode txns|fencing|rpw [--topic NAME] [--partitions N]
 * [--transactions N] [--records-per-txn R] [--abort-every K] [--records N] [--producer-prop k=v]...
 */
public final class Transactions {

    public static void main(String[] args) {
        Map<String, String> opts = new HashMap<>();
        Map<String, String> producerProps = new HashMap<>();
        for (int i = 0; i + 1 < args.length; i += 2) {
            if (args[i].equals("--producer-prop")) {
                int eq = args[i + 1].indexOf('=');
                producerProps.put(args[i + 1].substring(0, eq), args[i + 1].substring(eq + 1));
            } else if (args[i].startsWith("--")) {
                opts.put(args[i].substring(2), args[i + 1]);
            } else {
                System.err.println("unknown argument " + args[i]);
                System.exit(64);
            }
        }
        int code;
        try {
            String bootstrap = opts.getOrDefault("bootstrap", "127.0.0.1:19092");
            String topic = opts.getOrDefault("topic", "java-txn-" + UUID.randomUUID().toString().substring(0, 8));
            int partitions = Integer.parseInt(opts.getOrDefault("partitions", "3"));
            createTopic(bootstrap, topic, partitions);
            switch (opts.getOrDefault("mode", "txns")) {
                case "txns":
                    code = txns(bootstrap, topic, partitions, Integer.parseInt(opts.getOrDefault("transactions", "10")),
                            Integer.parseInt(opts.getOrDefault("records-per-txn", "20")),
                            Integer.parseInt(opts.getOrDefault("abort-every", "3")), producerProps);
                    break;
                case "fencing":
                    code = fencing(bootstrap, topic, partitions, producerProps);
                    break;
                case "rpw":
                    code = readProcessWrite(bootstrap, topic, partitions,
                            Integer.parseInt(opts.getOrDefault("records", "60")), producerProps);
                    break;
                default:
                    System.err.println("unknown mode " + opts.get("mode"));
                    code = 64;
            }
        } catch (Exception e) {
            Throwable root = e;
            while (root.getCause() != null && root.getCause() != root) {
                root = root.getCause();
            }
            System.out.println("ERROR " + e.getClass().getName() + ": " + e.getMessage());
            System.out.println("ROOT " + root.getClass().getName() + ": " + root.getMessage());
            code = 2;
        }
        System.exit(code);
    }

    static void createTopic(String bootstrap, String topic, int partitions) throws Exception {
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
                        return;
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
    }

    static KafkaProducer<byte[], byte[]> producer(String bootstrap, String txnId, Map<String, String> extra) {
        Properties pp = new Properties();
        pp.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        pp.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
        pp.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
        pp.put(ProducerConfig.TRANSACTIONAL_ID_CONFIG, txnId);
        pp.put(ProducerConfig.TRANSACTION_TIMEOUT_CONFIG, "10000");
        pp.put(ProducerConfig.MAX_BLOCK_MS_CONFIG, "20000");
        pp.put(ProducerConfig.DELIVERY_TIMEOUT_MS_CONFIG, "40000");
        pp.putAll(extra);
        return new KafkaProducer<>(pp);
    }

    /** Every record of the topic from the beginning to the end (the LSO for read_committed), as "p@offset=value". */
    static List<String> readAll(String bootstrap, String topic, int partitions, String isolation) {
        Properties cp = new Properties();
        cp.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        cp.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
        cp.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
        cp.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
        cp.put(ConsumerConfig.ISOLATION_LEVEL_CONFIG, isolation);
        cp.put(ConsumerConfig.FETCH_MAX_WAIT_MS_CONFIG, "50");
        List<String> out = new ArrayList<>();
        try (KafkaConsumer<byte[], byte[]> consumer = new KafkaConsumer<>(cp)) {
            List<TopicPartition> tps = new ArrayList<>();
            for (int p = 0; p < partitions; p++) {
                tps.add(new TopicPartition(topic, p));
            }
            consumer.assign(tps);
            consumer.seekToBeginning(tps);
            // endOffsets answers the LSO for a read_committed consumer and the high watermark otherwise.
            Map<TopicPartition, Long> end = consumer.endOffsets(tps, Duration.ofSeconds(10));
            Map<Integer, List<String>> byPartition = new HashMap<>();
            long deadline = System.currentTimeMillis() + 30_000;
            while (System.currentTimeMillis() < deadline) {
                for (ConsumerRecord<byte[], byte[]> r : consumer.poll(Duration.ofMillis(100))) {
                    byPartition.computeIfAbsent(r.partition(), k -> new ArrayList<>())
                            .add(r.partition() + "@" + r.offset() + "=" + new String(r.value(), StandardCharsets.UTF_8));
                }
                if (tps.stream().allMatch(tp -> consumer.position(tp) >= end.get(tp))) {
                    break;
                }
            }
            for (int p = 0; p < partitions; p++) {
                out.addAll(byPartition.getOrDefault(p, List.of()));
            }
        }
        return out;
    }

    static int txns(String bootstrap, String topic, int partitions, int transactions, int perTxn, int abortEvery,
                    Map<String, String> extra) throws Exception {
        List<String> committed = new ArrayList<>();
        List<String> written = new ArrayList<>();
        int aborted = 0;
        try (KafkaProducer<byte[], byte[]> p = producer(bootstrap, "java-txn-" + topic, extra)) {
            p.initTransactions();
            for (int t = 0; t < transactions; t++) {
                boolean abort = abortEvery > 0 && t % abortEvery == abortEvery - 1;
                p.beginTransaction();
                List<String> values = new ArrayList<>();
                for (int i = 0; i < perTxn; i++) {
                    String v = (abort ? "aborted-" : "committed-") + t + "-" + i;
                    p.send(new ProducerRecord<>(topic, i % partitions, null, v.getBytes(StandardCharsets.UTF_8)));
                    values.add(v);
                }
                p.flush();
                written.addAll(values);
                if (abort) {
                    p.abortTransaction();
                    aborted++;
                } else {
                    p.commitTransaction();
                    committed.addAll(values);
                }
            }
        }
        List<String> rc = readAll(bootstrap, topic, partitions, "read_committed");
        List<String> ru = readAll(bootstrap, topic, partitions, "read_uncommitted");
        List<String> problems = new ArrayList<>();
        List<String> rcValues = rc.stream().map(s -> s.substring(s.indexOf('=') + 1)).toList();
        List<String> ruValues = ru.stream().map(s -> s.substring(s.indexOf('=') + 1)).toList();
        if (!sortedByPartition(committed, partitions).equals(rcValues)) {
            problems.add("read_committed saw " + rc.size() + " records, want the " + committed.size() + " committed ones");
        }
        if (!sortedByPartition(written, partitions).equals(ruValues)) {
            problems.add("read_uncommitted saw " + ru.size() + " records, want all " + written.size() + " written");
        }
        System.out.println("RESULT transactions=" + transactions + " aborted=" + aborted);
        System.out.println("RESULT read_committed=" + rc.size() + " read_uncommitted=" + ru.size());
        System.out.println("RESULT read_committed_offsets=" + rc.stream().map(s -> s.substring(0, s.indexOf('='))).toList());
        return report("txns", problems);
    }

    /** Records in the order a per-partition read returns them (the test writes record i to partition i % n). */
    static List<String> sortedByPartition(List<String> values, int partitions) {
        List<String> out = new ArrayList<>();
        for (int p = 0; p < partitions; p++) {
            for (String v : values) {
                int i = Integer.parseInt(v.substring(v.lastIndexOf('-') + 1));
                if (i % partitions == p) {
                    out.add(v);
                }
            }
        }
        return out;
    }

    static int fencing(String bootstrap, String topic, int partitions, Map<String, String> extra) throws Exception {
        String txnId = "java-fence-" + topic;
        List<String> problems = new ArrayList<>();
        try (KafkaProducer<byte[], byte[]> first = producer(bootstrap, txnId, extra);
             KafkaProducer<byte[], byte[]> second = producer(bootstrap, txnId, extra)) {
            first.initTransactions();
            first.beginTransaction();
            for (int i = 0; i < 3; i++) {
                first.send(new ProducerRecord<>(topic, 0, null, ("zombie-" + i).getBytes(StandardCharsets.UTF_8)));
            }
            first.flush();
            long t0 = System.nanoTime();
            second.initTransactions();
            System.out.println("NOTE second initTransactions took " + (System.nanoTime() - t0) / 1_000_000 + " ms");
            String outcome;
            try {
                first.commitTransaction();
                outcome = "committed";
                problems.add("the fenced producer's commit succeeded");
            } catch (Exception e) {
                outcome = e.getClass().getSimpleName();
                System.out.println("NOTE first commitTransaction: " + e.getClass().getName() + ": " + e.getMessage());
            }
            System.out.println("RESULT first_commit=" + outcome);
            second.beginTransaction();
            for (int i = 0; i < 2; i++) {
                second.send(new ProducerRecord<>(topic, 0, null, ("good-" + i).getBytes(StandardCharsets.UTF_8)));
            }
            second.commitTransaction();
        }
        List<String> rc = readAll(bootstrap, topic, partitions, "read_committed");
        List<String> ru = readAll(bootstrap, topic, partitions, "read_uncommitted");
        System.out.println("RESULT read_committed=" + rc);
        System.out.println("RESULT read_uncommitted=" + ru);
        if (!rc.stream().map(s -> s.substring(s.indexOf('=') + 1)).toList().equals(List.of("good-0", "good-1"))) {
            problems.add("read_committed saw " + rc + ", want only the second producer's good-0, good-1");
        }
        return report("fencing", problems);
    }

    static int readProcessWrite(String bootstrap, String in, int partitions, int records,
                                Map<String, String> extra) throws Exception {
        String out = in + "-out";
        createTopic(bootstrap, out, partitions);
        String group = "java-rpw-" + in;
        Properties plain = new Properties();
        plain.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        plain.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
        plain.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
        try (KafkaProducer<byte[], byte[]> feed = new KafkaProducer<>(plain)) {
            for (int i = 0; i < records; i++) {
                feed.send(new ProducerRecord<>(in, i % partitions, null, ("in-" + i).getBytes(StandardCharsets.UTF_8)));
            }
        }
        Properties cp = new Properties();
        cp.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        cp.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
        cp.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
        cp.put(ConsumerConfig.GROUP_ID_CONFIG, group);
        cp.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
        cp.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
        cp.put(ConsumerConfig.ISOLATION_LEVEL_CONFIG, "read_committed");
        cp.put(ConsumerConfig.MAX_POLL_RECORDS_CONFIG, "10");
        cp.put(ConsumerConfig.FETCH_MAX_WAIT_MS_CONFIG, "50");
        List<String> problems = new ArrayList<>();
        int commits = 0;
        int aborts = 0;
        List<TopicPartition> tps = new ArrayList<>();
        for (int p = 0; p < partitions; p++) {
            tps.add(new TopicPartition(in, p));
        }
        try (KafkaProducer<byte[], byte[]> p = producer(bootstrap, "java-rpw-" + in, extra);
             KafkaConsumer<byte[], byte[]> c = new KafkaConsumer<>(cp)) {
            p.initTransactions();
            c.subscribe(List.of(in));
            long deadline = System.currentTimeMillis() + 60_000;
            Map<TopicPartition, Long> end = c.endOffsets(tps, Duration.ofSeconds(10));
            while (System.currentTimeMillis() < deadline) {
                var batch = c.poll(Duration.ofMillis(200));
                if (batch.isEmpty()) {
                    if (!c.assignment().isEmpty() && c.assignment().size() == partitions
                            && tps.stream().allMatch(tp -> c.position(tp) >= end.get(tp))) {
                        break;
                    }
                    continue;
                }
                p.beginTransaction();
                Map<TopicPartition, org.apache.kafka.clients.consumer.OffsetAndMetadata> offsets = new HashMap<>();
                for (ConsumerRecord<byte[], byte[]> r : batch) {
                    p.send(new ProducerRecord<>(out, r.partition(), null,
                            ("out-" + new String(r.value(), StandardCharsets.UTF_8)).getBytes(StandardCharsets.UTF_8)));
                    offsets.put(new TopicPartition(r.topic(), r.partition()),
                            new org.apache.kafka.clients.consumer.OffsetAndMetadata(r.offset() + 1));
                }
                p.sendOffsetsToTransaction(offsets, c.groupMetadata());
                if (commits == 1 && aborts == 0) {
                    p.flush();
                    p.abortTransaction();
                    aborts++;
                    // The aborted transaction's offsets are not committed: rewind to the group's offsets.
                    Map<TopicPartition, org.apache.kafka.clients.consumer.OffsetAndMetadata> committed =
                            c.committed(new java.util.HashSet<>(c.assignment()), Duration.ofSeconds(10));
                    for (TopicPartition tp : c.assignment()) {
                        var om = committed.get(tp);
                        c.seek(tp, om == null ? 0 : om.offset());
                    }
                    continue;
                }
                p.commitTransaction();
                commits++;
            }
            Map<TopicPartition, org.apache.kafka.clients.consumer.OffsetAndMetadata> committed =
                    c.committed(new java.util.HashSet<>(tps), Duration.ofSeconds(10));
            for (TopicPartition tp : tps) {
                var om = committed.get(tp);
                if (om == null || om.offset() != end.get(tp)) {
                    problems.add("group offset of " + tp + " is " + (om == null ? "none" : om.offset())
                            + ", want the end " + end.get(tp));
                }
            }
        }
        List<String> rc = readAll(bootstrap, out, partitions, "read_committed");
        Map<String, Integer> seen = new HashMap<>();
        for (String s : rc) {
            seen.merge(s.substring(s.indexOf('=') + 1), 1, Integer::sum);
        }
        int missing = 0;
        int duplicated = 0;
        for (int i = 0; i < records; i++) {
            int n = seen.getOrDefault("out-in-" + i, 0);
            missing += n == 0 ? 1 : 0;
            duplicated += n > 1 ? 1 : 0;
        }
        if (missing > 0 || duplicated > 0 || rc.size() != records) {
            problems.add("out read_committed: " + rc.size() + " records, " + missing + " inputs missing, "
                    + duplicated + " duplicated");
        }
        System.out.println("RESULT records=" + records + " out_read_committed=" + rc.size() + " missing=" + missing
                + " duplicated=" + duplicated + " aborted_transactions=" + aborts);
        System.out.println("NOTE committed transactions: " + commits);
        return report("rpw", problems);
    }

    static int report(String mode, List<String> problems) {
        if (!problems.isEmpty()) {
            System.out.println("MISMATCH mode=" + mode + " problems=" + problems.size());
            problems.forEach(p -> System.out.println("  " + p));
            return 1;
        }
        System.out.println("OK mode=" + mode);
        return 0;
    }

    private Transactions() {
    }
}

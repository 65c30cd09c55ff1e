package dev.strom.reference;

import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Collection;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.Set;
import java.util.TreeMap;
import java.util.TreeSet;

import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRebalanceListener;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.ConsumerRecords;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;

/**
 * A group member with the Java consumer: subscribe, poll until N records arrived, commitSync the offsets of
 * exactly the records it processed, read the committed offsets back, close (leaving the group). A second run in the
 * same group resumes from those commits.
 *
 * <p>Prints what the run observed, one fact a line: {@code ASSIGNED <sorted partitions>} per rebalance callback,
 * {@code CONSUMED <partition> <offset> <value>} per record, {@code EXTRA <n>} (records that arrived after the N
 * wanted ones, in one more poll: should be 0 when N is all there is), {@code COMMITTED <partition> <offset>}. Exit 0
 * when N records arrived, 1 on timeout, 2 when a client operation fails.
 *
 * <p>Arguments: --bootstrap HOST:PORT --topic NAME --group ID --records N [--protocol classic|consumer]
 * [--timeout-ms T] [--consumer-prop k=v]...
 */
public final class GroupConsumer {

    public static void main(String[] args) {
        String bootstrap = null;
        String topic = null;
        String group = null;
        String protocol = "classic";
        int records = 0;
        long timeoutMs = 60_000;
        Map<String, String> props = new HashMap<>();
        for (int i = 0; i < args.length; i++) {
            String v = i + 1 < args.length ? args[i + 1] : null;
            switch (args[i]) {
                case "--bootstrap": bootstrap = v; i++; break;
                case "--topic": topic = v; i++; break;
                case "--group": group = v; i++; break;
                case "--records": records = Integer.parseInt(v); i++; break;
                case "--protocol": protocol = v; i++; break;
                case "--timeout-ms": timeoutMs = Long.parseLong(v); i++; break;
                case "--consumer-prop": {
                    int eq = v.indexOf('=');
                    props.put(v.substring(0, eq), v.substring(eq + 1));
                    i++;
                    break;
                }
                default:
                    System.err.println("unknown argument " + args[i]);
                    System.exit(64);
            }
        }
        int code;
        try {
            code = run(bootstrap, topic, group, protocol, records, timeoutMs, props);
        } catch (Exception e) {
            System.out.println("ERROR " + e.getClass().getName() + ": " + e.getMessage());
            code = 2;
        }
        System.out.flush();
        System.exit(code);
    }

    static int run(String bootstrap, String topic, String group, String protocol, int wanted, long timeoutMs,
                   Map<String, String> extra) {
        Properties cp = new Properties();
        cp.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        cp.put(ConsumerConfig.GROUP_ID_CONFIG, group);
        cp.put(ConsumerConfig.GROUP_PROTOCOL_CONFIG, protocol);
        cp.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
        cp.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
        cp.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
        cp.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
        if (protocol.equals("classic")) {
            // Short waits so a run takes seconds; the consumer protocol takes its timeouts from the broker.
            cp.put(ConsumerConfig.SESSION_TIMEOUT_MS_CONFIG, "6000");
            cp.put(ConsumerConfig.HEARTBEAT_INTERVAL_MS_CONFIG, "1000");
        }
        cp.putAll(extra);

        Map<Integer, Long> next = new TreeMap<>();
        int consumed = 0;
        try (KafkaConsumer<byte[], byte[]> consumer = new KafkaConsumer<>(cp)) {
            consumer.subscribe(List.of(topic), new ConsumerRebalanceListener() {
                @Override
                public void onPartitionsRevoked(Collection<TopicPartition> partitions) {
                }

                @Override
                public void onPartitionsAssigned(Collection<TopicPartition> partitions) {
                    Set<Integer> ps = new TreeSet<>();
                    for (TopicPartition tp : partitions) {
                        ps.add(tp.partition());
                    }
                    System.out.println("ASSIGNED " + ps);
                }
            });
            long deadline = System.currentTimeMillis() + timeoutMs;
            List<ConsumerRecord<byte[], byte[]>> beyond = new ArrayList<>();
            while (consumed < wanted && System.currentTimeMillis() < deadline) {
                ConsumerRecords<byte[], byte[]> batch = consumer.poll(Duration.ofMillis(200));
                for (ConsumerRecord<byte[], byte[]> r : batch) {
                    if (consumed < wanted) {
                        consumed++;
                        System.out.println("CONSUMED " + r.partition() + " " + r.offset() + " "
                                + new String(r.value(), StandardCharsets.UTF_8));
                        next.put(r.partition(), r.offset() + 1);
                    } else {
                        beyond.add(r);
                    }
                }
            }
            if (consumed == wanted) {
                // One more poll: records past the committed position that should not exist.
                for (ConsumerRecord<byte[], byte[]> r : consumer.poll(Duration.ofMillis(500))) {
                    beyond.add(r);
                }
            }
            System.out.println("EXTRA " + beyond.size());
            Map<TopicPartition, OffsetAndMetadata> commit = new HashMap<>();
            for (Map.Entry<Integer, Long> e : next.entrySet()) {
                commit.put(new TopicPartition(topic, e.getKey()), new OffsetAndMetadata(e.getValue()));
            }
            consumer.commitSync(commit, Duration.ofSeconds(30));
            Set<TopicPartition> all = new java.util.HashSet<>();
            for (org.apache.kafka.common.PartitionInfo pi : consumer.partitionsFor(topic)) {
                all.add(new TopicPartition(topic, pi.partition()));
            }
            Map<TopicPartition, OffsetAndMetadata> committed = consumer.committed(all, Duration.ofSeconds(30));
            Map<Integer, Long> sorted = new TreeMap<>();
            for (Map.Entry<TopicPartition, OffsetAndMetadata> e : committed.entrySet()) {
                sorted.put(e.getKey().partition(), e.getValue() == null ? -1L : e.getValue().offset());
            }
            for (Map.Entry<Integer, Long> e : sorted.entrySet()) {
                System.out.println("COMMITTED " + e.getKey() + " " + e.getValue());
            }
        }
        return consumed == wanted ? 0 : 1;
    }
}

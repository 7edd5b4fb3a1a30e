/* SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause */
/*
 * A tiny raw-socket MQTT 3.1.1 client for what libmosquitto cannot do in a test: open a TCP
 * connection and never send CONNECT, send CONNECT and PUBLISH in one write (pipelined, before
 * the CONNACK), send malformed or unusual packets, or read the broker's packets byte for byte.
 *
 * Everything is blocking with a poll() deadline; nothing is buffered in user space, so the
 * socket can be handed between these functions freely. Only 127.0.0.1 is ever contacted.
 */
#ifndef PRESENCE_RAWMQTT_H
#define PRESENCE_RAWMQTT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* MQTT control packet types: the high nibble of a packet's first byte (see RAW_TYPE). */
enum raw_packet_type {
	RAW_CONNECT = 1,
	RAW_CONNACK = 2,
	RAW_PUBLISH = 3,
	RAW_PUBACK = 4,
	RAW_PUBREC = 5,
	RAW_PUBREL = 6,
	RAW_PUBCOMP = 7,
	RAW_SUBSCRIBE = 8,
	RAW_SUBACK = 9,
	RAW_UNSUBSCRIBE = 10,
	RAW_UNSUBACK = 11,
	RAW_PINGREQ = 12,
	RAW_PINGRESP = 13,
	RAW_DISCONNECT = 14,
};

/* The packet type of a first byte as raw_read_packet returns it. */
#define RAW_TYPE(first_byte) ((first_byte) >> 4)

/* Opens a TCP connection to 127.0.0.1:port and sends nothing. Returns the socket, or -1 (with
 * errno set) when the connection fails. Close it with raw_close. */
int raw_open(int port);

/* Appends a CONNECT packet (protocol level 4) to buf[*len..cap). user and pass may be NULL
 * (pass is only sent with a user); id may be "" (then clean must be true for the broker to
 * accept it). keepalive is in seconds (0..65535). Returns 0, or -1 when the packet does not fit
 * or a field is too long, leaving *len unchanged. */
int raw_build_connect(uint8_t *buf, size_t cap, size_t *len, const char *id, const char *user,
                      const char *pass, int keepalive, bool clean);

/* Appends a PUBLISH packet. mid is only written for qos > 0. Same return and failure contract
 * as raw_build_connect. */
int raw_build_publish(uint8_t *buf, size_t cap, size_t *len, const char *topic, const void *p,
                      size_t n, int qos, bool retain, uint16_t mid);

/* Appends a SUBSCRIBE packet for one filter. Same contract as raw_build_connect. */
int raw_build_subscribe(uint8_t *buf, size_t cap, size_t *len, const char *filter, int qos,
                        uint16_t mid);

/* Appends a DISCONNECT packet. Same contract as raw_build_connect. */
int raw_build_disconnect(uint8_t *buf, size_t cap, size_t *len);

/* Writes all n bytes of buf (one write where the kernel allows). Returns 0, or -1 when the
 * connection fails. */
int raw_write_all(int fd, const void *buf, size_t n);

/* Builds and sends one CONNECT. Returns 0, or -1 on a build or write failure. */
int raw_send_connect(int fd, const char *id, const char *user, const char *pass, int keepalive,
                     bool clean);

/* Builds and sends one PUBLISH. Returns 0, or -1 on a build or write failure. */
int raw_send_publish(int fd, const char *topic, const void *p, size_t n, int qos, bool retain,
                     uint16_t mid);

/* Builds and sends one SUBSCRIBE. Returns 0, or -1 on a build or write failure. */
int raw_send_subscribe(int fd, const char *filter, int qos, uint16_t mid);

/* Sends a DISCONNECT. Returns 0, or -1 on a write failure. */
int raw_send_disconnect(int fd);

/* Reads one whole packet, waiting at most timeout_ms in total. On success returns 0, stores the
 * first byte (type and flags; RAW_TYPE gives the type) in *type, the variable header and payload
 * in buf and their length in *len. Returns -1 on timeout, when the connection closes, or when
 * the packet does not fit in cap bytes (its remaining bytes are then consumed and dropped). */
int raw_read_packet(int fd, uint8_t *type, uint8_t *buf, size_t cap, size_t *len, int timeout_ms);

/* Waits at most timeout_ms for the broker to close the connection, discarding whatever it sends
 * meanwhile. Returns true when the connection is closed (end of file or reset). */
bool raw_wait_closed(int fd, int timeout_ms);

/* Closes the socket (no DISCONNECT is sent). A negative fd is ignored. */
void raw_close(int fd);

#endif

/* Host test runner: every TEST of test_codec.c, test_session.c, test_auth.c and test_reliable.c. */
#include <stdlib.h>

#include "unittest.h"

int main(void)
{
    RUN(crc_vectors);
    RUN(cobs_vectors);
    RUN(cobs_bounds);
    RUN(varint_vectors);
    RUN(message_vectors_decode);
    RUN(message_vectors_encode);
    RUN(frame_vectors);
    RUN(frame_vectors_every_split);
    RUN(bad_bodies);
    RUN(streams);
    RUN(streams_byte_by_byte);
    RUN(rx_max_body_boundaries);
    RUN(encode_capacity_checks);
    RUN(cbor_vector_data);
    RUN(cbor_rfc8949_examples);
    RUN(cbor_float32_shortest);
    RUN(cbor_f64_to_f32_rounding);
    RUN(cbor_writer_capacity);
    RUN(cbor_reader_errors);
    RUN(random_frame_decoder);
    RUN(frame_decoder_vs_previous);
    RUN(random_message_decoder);
    RUN(random_cbor);
    RUN(mutated_vectors);
    RUN(session_hello_register_vectors);
    RUN(session_dispatch_and_requests);
    RUN(session_keepalive_and_timeout);
    RUN(session_invite_and_no_session);
    RUN(session_handshake_idempotent);
    RUN(session_errors_answered);
    RUN(session_random_input);
    RUN(session_write_faults);
    RUN(session_api_argument_errors);
    RUN(session_config_mismatch);
    RUN(session_remove_and_unlisten);
    RUN(session_deinit);
    RUN(session_next_deadline);
    RUN(session_one_write_per_frame);
    RUN(session_meta_listen_options_retained);
    RUN(auth_blake2s_vectors);
    RUN(auth_tag_vectors);
    RUN(auth_session_vectors);
    RUN(auth_wrong_key_and_unkeyed);
    RUN(reliable_sequence_header);
    RUN(reliable_exchanges);
    RUN(reliable_refused_bodies);
    RUN(reliable_session_scripted);
    RUN(reliable_session_gives_up);
    printf("%d checks\n", ut_checks);
    printf("%d passed, %d failed\n", ut_passed, ut_failed);
    return ut_failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}

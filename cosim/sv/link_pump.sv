// Host-link byte pump for co-simulation test tops.
//
// cocotb never steps the clock to move host-link bytes: it writes a request's bytes into
// in_mem through VPI and advances in_len; the pump feeds them to the device's rx stream at
// up to one byte per clock. Every byte the device sends on tx (always accepted) is
// captured into the out_mem ring; out_count counts them. cocotb reads the ring whenever it
// wakes up. Both memories are rings of DEPTH bytes; the driver checks it never falls a
// whole ring behind. Ring entries hold WORD_BYTES bytes each (byte k of the ring is byte
// k % WORD_BYTES, little-endian, of entry k / WORD_BYTES): with wide entries a driver moves
// a whole burst in a few VPI accesses instead of one per byte. WORD_BYTES is a power of two.
module link_pump #(parameter int DEPTH = 65536, parameter int WORD_BYTES = 1) (
  input  logic clk,
  output logic [7:0] rx_payload, output logic rx_valid, input logic rx_ready,
  input  logic [7:0] tx_payload, input logic tx_valid, output logic tx_ready
);
  localparam int AW = $clog2(DEPTH);
  localparam int WORDS = DEPTH / WORD_BYTES;
  logic [8*WORD_BYTES-1:0] in_mem  [0:WORDS-1] /*verilator public_flat_rw*/;
  logic [31:0] in_len              /*verilator public_flat_rw*/ = 32'd0;
  logic [31:0] in_count            /*verilator public_flat_rw*/ = 32'd0;
  logic [8*WORD_BYTES-1:0] out_mem [0:WORDS-1] /*verilator public_flat_rw*/;
  logic [31:0] out_count           /*verilator public_flat_rw*/ = 32'd0;

  wire [AW-1:0] in_at = in_count[AW-1:0];
  wire [AW-1:0] out_at = out_count[AW-1:0];
  assign rx_valid   = in_count != in_len;
  assign rx_payload = in_mem[in_at / WORD_BYTES][8 * (in_at % WORD_BYTES) +: 8];
  assign tx_ready   = 1'b1;

  always_ff @(posedge clk) begin
    if (rx_valid && rx_ready) in_count <= in_count + 32'd1;
    if (tx_valid) begin
      out_mem[out_at / WORD_BYTES][8 * (out_at % WORD_BYTES) +: 8] <= tx_payload;
      out_count <= out_count + 32'd1;
    end
  end
endmodule

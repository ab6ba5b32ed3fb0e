// Ideal (error-free) quantum channel for the end-to-end sifting test.
//
// Alice's pulses must be one sample wide. Each laser pulse reaches Bob with probability
// 2^-LOG2_LOSS; Bob's beam splitter picks the basis 50/50 (passive choice); in the matching
// basis the detector of Alice's bit clicks, in the other basis a random one. No dark counts,
// no errors: both ends' sifted keys must be identical. The sync channel passes unchanged.
// Randomness: xorshift128+ (Vigna), enough bits for 8 samples per clock. Outputs are
// registered (one clock of "fibre").
module ideal_channel #(parameter int S = 4, parameter int LOG2_LOSS = 8) (
  input  logic clk,
  input  logic [4*S-1:0] laser, input logic [S-1:0] sync,
  output logic [4*S-1:0] det, output logic [S-1:0] sync_out
);
  localparam int R = LOG2_LOSS + 2;   // random bits per sample
  // xorshift128+ state, stepped twice per clock (128 random bits)
  logic [63:0] a0 = 64'h9E3779B97F4A7C15, a1 = 64'hBF58476D1CE4E5B9;
  logic [63:0] b0, b1, c0, c1, x, y;
  always_comb begin
    // step 1: (a0, a1) -> (b0, b1), output x
    b0 = a1;
    b1 = a0 ^ (a0 << 23);
    b1 = b1 ^ a1 ^ (b1 >> 17) ^ (a1 >> 26);
    x = b1 + a1;
    // step 2: (b0, b1) -> (c0, c1), output y
    c0 = b1;
    c1 = b0 ^ (b0 << 23);
    c1 = c1 ^ b1 ^ (c1 >> 17) ^ (b1 >> 26);
    y = c1 + b1;
  end
  logic [127:0] rnd;
  assign rnd = {y, x};
  logic [4*S-1:0] det_next;
  always_comb begin
    det_next = '0;
    for (int i = 0; i < S; i++) begin
      logic any, a_basis, a_bit, pass, b_basis, b_rand, bit_out;
      any = laser[i] | laser[S+i] | laser[2*S+i] | laser[3*S+i];
      a_basis = laser[2*S+i] | laser[3*S+i];
      a_bit = laser[S+i] | laser[3*S+i];
      pass = rnd[i*R +: LOG2_LOSS] == '0;
      b_basis = rnd[i*R + LOG2_LOSS];
      b_rand = rnd[i*R + LOG2_LOSS + 1];
      bit_out = (b_basis == a_basis) ? a_bit : b_rand;
      if (any && pass) det_next[(2*b_basis + bit_out)*S + i] = 1'b1;
    end
  end
  always_ff @(posedge clk) begin
    a0 <= c0;
    a1 <= c1;
    det <= det_next;
    sync_out <= sync;
  end
endmodule

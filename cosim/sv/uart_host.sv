// Host side of an 8N1 serial line, for co-simulation tops that put the device's own UART
// (hdl/uart.py) between the link pump and the endpoint: bytes from the pump go out on
// line_out, bytes received on line_in come back to the pump. Each bit lasts DIVISOR clocks,
// as in the device UART; the receiver samples mid-bit after a two-register synchroniser.
// It plays the USB-UART bridge of a real board.
module uart_host #(parameter int DIVISOR = 16) (
  input  logic clk,
  input  logic [7:0] in_payload, input logic in_valid, output logic in_ready,
  output logic line_out,
  input  logic line_in,
  output logic [7:0] out_payload, output logic out_valid
);
  logic ov = 1'b0;
  assign out_valid = ov;
  // transmitter: start bit, 8 data bits LSB first, stop bit
  logic [9:0]  tx_shift = '1;
  logic [3:0]  tx_left  = 4'd0;
  logic [15:0] tx_cnt   = 16'd0;
  assign line_out = tx_shift[0];
  assign in_ready = tx_left == 4'd0;
  always_ff @(posedge clk) begin
    if (tx_left == 4'd0) begin
      if (in_valid) begin
        tx_shift <= {1'b1, in_payload, 1'b0};
        tx_left  <= 4'd10;
        tx_cnt   <= 16'(DIVISOR - 1);
      end
    end else if (tx_cnt == 16'd0) begin
      tx_shift <= {1'b1, tx_shift[9:1]};
      tx_left  <= tx_left - 4'd1;
      tx_cnt   <= 16'(DIVISOR - 1);
    end else begin
      tx_cnt <= tx_cnt - 16'd1;
    end
  end

  // receiver
  logic [1:0]  rsync = 2'b11;
  logic [1:0]  state = 2'd0;   // 0 idle, 1 start, 2 data, 3 stop
  logic [15:0] rx_cnt = 16'd0;
  logic [2:0]  nbits = 3'd0;
  logic [7:0]  shreg = 8'd0;
  logic        brk = 1'b0;
  wire s = rsync[1];
  always_ff @(posedge clk) begin
    rsync <= {rsync[0], line_in};
    ov <= 1'b0;
    if (brk) begin
      if (s) brk <= 1'b0;
    end else case (state)
      2'd0: if (!s) begin state <= 2'd1; rx_cnt <= 16'(DIVISOR / 2); end
      2'd1: if (rx_cnt == 16'd0) begin
              if (!s) begin state <= 2'd2; rx_cnt <= 16'(DIVISOR - 1); nbits <= 3'd0; end
              else state <= 2'd0;
            end else rx_cnt <= rx_cnt - 16'd1;
      2'd2: if (rx_cnt == 16'd0) begin
              shreg <= {s, shreg[7:1]};
              rx_cnt <= 16'(DIVISOR - 1);
              nbits <= nbits + 3'd1;
              if (nbits == 3'd7) state <= 2'd3;
            end else rx_cnt <= rx_cnt - 16'd1;
      2'd3: if (rx_cnt == 16'd0) begin
              state <= 2'd0;
              if (s) begin out_payload <= shreg; ov <= 1'b1; end
              else brk <= 1'b1;          // framing error: wait for the line to go high
            end else rx_cnt <= rx_cnt - 16'd1;
    endcase
  end
endmodule
